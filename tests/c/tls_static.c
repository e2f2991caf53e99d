/* A TLS client with OpenSSL linked in statically (libssl.a, libcrypto.a),
 * as node or envoy carry theirs: SSL_write is in its own symbol table, no
 * libssl.so is mapped.
 *
 * tls_static CA PORT FILE: send FILE's bytes as a header to 127.0.0.1:PORT.
 * Exit status names the step that failed (2 usage ... 7 write). */
#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 4)
        return 2;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx || !SSL_CTX_load_verify_locations(ctx, argv[1], NULL))
        return 3;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)atoi(argv[2]));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s, (struct sockaddr *)&a, sizeof a) != 0)
        return 4;
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, s);
    if (SSL_connect(ssl) != 1)
        return 5;
    char body[4096];
    int fd = open(argv[3], O_RDONLY);
    int n = fd < 0 ? -1 : (int)read(fd, body, sizeof body);
    if (n <= 0)
        return 6;
    close(fd);
    while (n > 0 && (body[n - 1] == '\n' || body[n - 1] == '\r'))
        n--;
    char req[8192];
    int m = snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: x\r\n%.*s\r\n\r\n", n, body);
    if (SSL_write(ssl, req, m) != m)
        return 7;
    char buf[256];
    while (SSL_read(ssl, buf, sizeof buf) > 0) {
    }
    memset(req, 0, sizeof req);
    memset(body, 0, sizeof body);
    SSL_shutdown(ssl);
    SSL_free(ssl);
    close(s);
    SSL_CTX_free(ctx);
    return 0;
}
