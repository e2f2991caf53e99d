/* Moves a file's bytes with io_uring only (liburing), never read(2),
 * write(2), openat(2), connect(2) or send(2) on them:
 *
 *   uring_io read FILE               IORING_OP_OPENAT + IORING_OP_READ
 *   uring_io send FILE HOST PORT     ... then IORING_OP_CONNECT + IORING_OP_SEND
 *   uring_io copy FILE OUT           ... then IORING_OP_OPENAT (OUT) + IORING_OP_WRITE
 *   uring_io readat DIR NAME         IORING_OP_OPENAT relative to an O_PATH
 *                                    dirfd of DIR, + IORING_OP_READ
 *
 * Prints "pid N" and "bytes M" (bytes read); wipes its buffer before exit. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <liburing.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static struct io_uring ring;

/* Submit the prepared SQE and wait for its completion; its result. */
static int run1(const char *what) {
    struct io_uring_cqe *cqe;
    if (io_uring_submit(&ring) != 1) {
        fprintf(stderr, "%s: submit failed\n", what);
        exit(2);
    }
    if (io_uring_wait_cqe(&ring, &cqe) < 0) {
        fprintf(stderr, "%s: wait failed\n", what);
        exit(2);
    }
    int res = cqe->res;
    io_uring_cqe_seen(&ring, cqe);
    if (res < 0) {
        fprintf(stderr, "%s: %s\n", what, strerror(-res));
        exit(3);
    }
    return res;
}

static int uopen(int dirfd, const char *path, int flags) {
    io_uring_prep_openat(io_uring_get_sqe(&ring), dirfd, path, flags, 0600);
    return run1("openat");
}

int main(int argc, char **argv) {
    static char buf[4096];
    if (argc < 3) {
        fprintf(stderr, "usage: uring_io read|send|copy|readat FILE [...]\n");
        return 1;
    }
    if (io_uring_queue_init(8, &ring, 0) < 0) {
        perror("io_uring_queue_init");
        return 2;
    }
    printf("pid %d\n", getpid());
    int fd;
    if (strcmp(argv[1], "readat") == 0 && argc == 4) {
        int dir = open(argv[2], O_PATH | O_DIRECTORY);
        if (dir < 0) {
            perror("open dir");
            return 1;
        }
        fd = uopen(dir, argv[3], O_RDONLY);
    } else {
        fd = uopen(AT_FDCWD, argv[2], O_RDONLY);
    }
    io_uring_prep_read(io_uring_get_sqe(&ring), fd, buf, sizeof buf, 0);
    int n = run1("read");
    printf("bytes %d\n", n);

    if (strcmp(argv[1], "send") == 0 && argc == 5) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_port = htons((unsigned short)atoi(argv[4]));
        inet_pton(AF_INET, argv[3], &a.sin_addr);
        io_uring_prep_connect(io_uring_get_sqe(&ring), s, (struct sockaddr *)&a, sizeof a);
        run1("connect");
        io_uring_prep_send(io_uring_get_sqe(&ring), s, buf, n, 0);
        run1("send");
        close(s);
    } else if (strcmp(argv[1], "copy") == 0 && argc == 4) {
        int out = uopen(AT_FDCWD, argv[3], O_WRONLY | O_CREAT | O_TRUNC);
        io_uring_prep_write(io_uring_get_sqe(&ring), out, buf, n, 0);
        run1("write");
        close(out);
    } else if (strcmp(argv[1], "read") != 0 && strcmp(argv[1], "readat") != 0) {
        fprintf(stderr, "bad arguments\n");
        return 1;
    }
    memset(buf, 0, sizeof buf);
    io_uring_queue_exit(&ring);
    fflush(stdout);
    return 0;
}
