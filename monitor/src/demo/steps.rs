//! The demo's steps, one method each, in order.

use super::*;

impl Demo {
    fn agent(&mut self) -> Result<&mut AgentProc> {
        self.agent
            .as_mut()
            .ok_or_else(|| anyhow!("the agent is not running"))
    }

    fn holder(&mut self) -> Result<&mut Holder> {
        self.holder
            .as_mut()
            .ok_or_else(|| anyhow!("the holder is not running"))
    }

    fn holder_cmd(&mut self, c: &str) -> Result<()> {
        self.holder()?.cmd(c)
    }

    /// Takes new alerts, printing each.
    fn poll_alerts(&mut self) -> usize {
        let new = self.tail.poll();
        for a in &new {
            println!("      {}", alert_line(a));
        }
        let n = new.len();
        self.alerts.extend(new);
        n
    }

    fn fired(&self, r: Rule) -> bool {
        self.alerts
            .iter()
            .any(|a| a.rule == r.name() && a.secret_id == SECRET_ID)
    }

    /// Poll alerts for `d` (the agent must stay up).
    fn settle(&mut self, d: Duration) -> Result<usize> {
        let t0 = Instant::now();
        let mut n = 0;
        loop {
            n += self.poll_alerts();
            self.agent()?.check_alive()?;
            if t0.elapsed() >= d {
                return Ok(n);
            }
            nap(Duration::from_millis(25))?;
        }
    }

    /// Wait up to the timeout for an alert of `r` about the demo secret.
    fn wait_rule(&mut self, r: Rule) -> Result<bool> {
        let t0 = Instant::now();
        loop {
            self.poll_alerts();
            if self.fired(r) {
                return Ok(true);
            }
            self.agent()?.check_alive()?;
            if t0.elapsed() > self.timeout {
                return Ok(false);
            }
            nap(Duration::from_millis(25))?;
        }
    }

    /// One step: say what happens, do it, wait for the rule it shows.
    fn step(
        &mut self,
        title: &str,
        how: &str,
        rule: Option<Rule>,
        action: impl FnOnce(&mut Self) -> Result<()>,
    ) -> Result<()> {
        self.step += 1;
        println!("\n[{}/{STEPS}] {title}", self.step);
        if !how.is_empty() {
            println!("      $ {}", clean(how));
        }
        if let Err(e) = action(self) {
            check_stop()?;
            println!("      step failed: {e:#}");
            self.failed.push((self.step, rule, format!("{e:#}")));
        }
        match rule {
            None => {
                if self.settle(Duration::from_millis(500))? == 0 {
                    println!("      (no alert: this is what the secret was issued for)");
                }
            }
            Some(r) => {
                if !self.wait_rule(r)? {
                    println!(
                        "      no {} alert within {}",
                        r.name(),
                        humantime(self.timeout)
                    );
                }
            }
        }
        Ok(())
    }

    fn api_request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
        self.rt.block_on(request(&self.api, method, path, body))
    }

    pub(super) fn play(&mut self) -> Result<ExitCode> {
        let dir = self.scratch.dir.clone();
        println!(
            "monitor demo: a secret's life on this machine, every rule firing, then its timeline."
        );
        println!("  scratch dir   {} (removed at the end)", dir.display());

        // The delivery file: the secret and a newline, for root only.
        let secrets = dir.join("secrets");
        DirBuilder::new().mode(0o700).create(&secrets)?;
        DirBuilder::new().mode(0o700).create(dir.join("stolen"))?;
        DirBuilder::new().mode(0o700).create(dir.join("discover"))?;
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&self.file)
                .with_context(|| format!("creating {}", self.file.display()))?;
            let mut content = Zeroizing::new(self.secret.as_bytes().to_vec());
            content.push(b'\n');
            f.write_all(&content)?;
        }
        // Its own (empty) config: nothing from /etc/monitor/monitor.toml
        // (feeds, issuance sources, watches) takes part.
        let config = dir.join("monitor.toml");
        std::fs::write(&config, "# monitor demo: defaults only\n")?;

        let service = listener()?;
        let exfil = listener()?;
        println!(
            "  listeners     {service} (the service the secret is for), {exfil} (somewhere else)"
        );

        // The agent.
        let args: Vec<OsString> = vec![
            "run".into(),
            "--config".into(),
            config.into(),
            "--db".into(),
            self.db.clone().into(),
            "--alerts".into(),
            self.alerts_path.clone().into(),
            "--api".into(),
            self.api.clone().into(),
            "--watch".into(),
            secrets.join("*").into(),
            // Replaces the default discovery globs: the machine's own
            // secrets stay out of the demo.
            "--discover".into(),
            dir.join("discover/*").into(),
        ];
        self.agent = Some(AgentProc::start(&self.exe, &args)?);
        let ready = self.agent()?.wait_ready()?;
        let pid = self.agent()?.pid();
        println!(
            "  agent         pid {pid}, {}",
            ready.trim_start_matches("monitor: ready: ")
        );
        println!(
            "  store         {} (alerts also in {})",
            self.db.display(),
            self.alerts_path.display()
        );

        // The holder, with the secret in its environment.
        self.holder = Some(Holder::spawn(
            &self.exe,
            &self.file,
            &self.tools.true_,
            &self.secret,
        )?);
        let hpid = self.holder()?.pid;
        println!(
            "  holder        demo-holder (pid {hpid}), started with the secret in ${HOLDER_ENV}; its file is {}",
            self.file.display()
        );

        // The issuance, through the agent's API (what `monitor issue` does).
        let ia = IssueArgs {
            secret_id: SECRET_ID.into(),
            files: vec![self.file.display().to_string()],
            envs: vec![HOLDER_ENV.into()],
            pid: Some(hpid),
            ttl: Some(format!("{}s", TTL.as_secs())),
            allow: vec![service.to_string()],
            label: vec!["demo=true".into()],
            ..Default::default()
        };
        let record = issue_record(&ia)?;
        let (st, answer) = self.api_request("POST", "/issuances", Some(&record))?;
        if !(200..300).contains(&st) {
            bail!("the agent refused the issuance (HTTP {st}): {answer}");
        }
        let issued = Instant::now();
        println!(
            "  issued        {SECRET_ID} to pid {hpid}: ttl {}s, allowed destination {service} only",
            TTL.as_secs()
        );
        println!(
            "                (as: monitor issue --secret-id {SECRET_ID} --file {} --env {HOLDER_ENV} --pid {hpid} --ttl {}s --allow {service} --api {})",
            self.file.display(),
            TTL.as_secs(),
            self.api.display()
        );
        println!("  The value is random, never printed, and goes with the scratch dir.");

        // 1. Ordinary use.
        self.step(
            "The holder reads its delivery file and sends the secret to its service",
            &format!(
                "demo-holder: read {}; send(\"PASS <secret>\") to {service}",
                self.file.display()
            ),
            None,
            |d| {
                d.holder_cmd("read")?;
                d.wait_learned()?;
                d.holder_cmd(&format!("send {service}"))
            },
        )?;
        // 2..10. Misuse, one rule a step.
        self.step(
            "The holder connects somewhere it was not issued the secret for",
            &format!("demo-holder: connect({exfil})"),
            Some(Rule::HolderEgressUnexpected),
            |d| d.holder_cmd(&format!("connect {exfil}")),
        )?;
        let file = self.file.display().to_string();
        self.step(
            "A process outside the holder reads the delivery file",
            &format!("cat {file} > /dev/null"),
            Some(Rule::ReadForeign),
            |d| {
                let mut c = command(&d.tools.cat, libc::SIGKILL);
                c.arg(&d.file);
                run_actor(c, "cat", None).map(drop)
            },
        )?;
        let copy = self.copy.display().to_string();
        self.step(
            "The delivery file is copied",
            &format!("cp {file} {copy}"),
            Some(Rule::CopyFile),
            |d| {
                let mut c = command(&d.tools.cp, libc::SIGKILL);
                c.arg(&d.file).arg(&d.copy);
                run_actor(c, "cp", None).map(drop)
            },
        )?;
        self.step(
            "The holder logs its connection string to stderr (a pipe)",
            "demo-holder: write(2, \"app: connecting ... password=<secret>\")",
            Some(Rule::LeakLog),
            |d| d.holder_cmd("log"),
        )?;
        let true_ = self.tools.true_.display().to_string();
        self.step(
            "The holder passes the secret on a command line",
            &format!("{true_} --password=<secret>"),
            Some(Rule::LeakArgv),
            |d| d.holder_cmd("argv"),
        )?;
        let sh = self.tools.sh.display().to_string();
        self.step(
            "A program outside the holder is started with the secret in its environment",
            &format!("{LEAK_ENV}=<secret> {sh} -c 'exit 0'"),
            Some(Rule::EnvPropagated),
            |d| {
                let mut c = command(&d.tools.sh, libc::SIGKILL);
                c.arg("-c").arg("exit 0").env(LEAK_ENV, d.secret.as_str());
                run_actor(c, "sh", None).map(drop)
            },
        )?;
        self.step(
            "Another process reads the holder's environment",
            &format!("demo-scraper: read /proc/{hpid}/environ"),
            Some(Rule::EnvironScrape),
            |d| {
                let mut c = command(&d.exe, libc::SIGKILL);
                c.args(["demo-actor", "scrape", "--pid", &hpid.to_string()]);
                run_actor(c, "demo-scraper", None).map(drop)
            },
        )?;
        self.step(
            "The holder sends the secret somewhere it is not allowed to go",
            &format!("demo-holder: send(\"PASS <secret>\") to {exfil}"),
            Some(Rule::SendUnexpectedDestination),
            |d| d.holder_cmd(&format!("send {exfil}")),
        )?;
        self.step(
            "A process never given the secret replays it to the service",
            &format!("demo-replayer: send(\"Authorization: Bearer <secret>\") to {service}"),
            Some(Rule::ReplayForeign),
            |d| {
                let mut c = command(&d.exe, libc::SIGKILL);
                c.args(["demo-actor", "replay", "--to", &service.to_string()]);
                let mut input = Zeroizing::new(d.secret.as_bytes().to_vec());
                input.push(b'\n');
                run_actor(c, "demo-replayer", Some(&input)).map(drop)
            },
        )?;
        // 11. After expiry.
        let expiry = issued + TTL + Duration::from_secs(1);
        let now = Instant::now();
        if now < expiry {
            println!(
                "\n      (waiting {} for the secret's {}s TTL to run out)",
                humantime(expiry - now),
                TTL.as_secs()
            );
            self.settle(expiry - now)?;
        }
        self.step(
            "After its TTL, the holder uses the secret again",
            &format!("demo-holder: send(\"PASS <secret>\") to {service}"),
            Some(Rule::ReplayExpired),
            |d| d.holder_cmd(&format!("send {service}")),
        )?;

        // Late alerts, then stop everything: SIGTERM flushes the store and
        // rolls up repeats.
        self.settle(Duration::from_millis(500))?;
        if let Some(mut h) = self.holder.take() {
            h.stop();
        }
        let mut agent = self.agent.take().expect("agent running");
        let st = agent.stop();
        let agent_log = agent.log();
        self.poll_alerts();
        let stopped = agent_log
            .iter()
            .rev()
            .find(|l| l.starts_with("monitor: stopped"))
            .cloned();
        println!(
            "\nAgent stopped ({}): {}",
            if st.success() {
                "SIGTERM".to_string()
            } else {
                st.to_string()
            },
            stopped
                .as_deref()
                .map(|l| l.trim_start_matches("monitor: stopped: "))
                .unwrap_or("no summary line")
        );

        // Ordinary use raised nothing?
        let benign: Vec<&Alert> = self
            .alerts
            .iter()
            .filter(|a| {
                a.actor.pid == hpid
                    && (a.rule == Rule::ReadForeign.name()
                        || (a.evidence.dest.as_deref() == Some(&service.to_string())
                            && a.rule != Rule::ReplayExpired.name()))
            })
            .collect();

        println!("\nRules ({} alerts about {SECRET_ID}):", self.alerts.len());
        let stdout = io::stdout();
        let missing = rules_table(&self.alerts, &mut stdout.lock())?;
        if benign.is_empty() {
            println!("  The holder's ordinary use (reading its file, sending to {service} before expiry) raised nothing.");
        } else {
            println!(
                "  Unexpected: the holder's ordinary use raised {} alert(s).",
                benign.len()
            );
        }

        println!("\nTimeline of {SECRET_ID} (from the store, as `monitor timeline --secret {SECRET_ID} --db {}`):", self.db.display());
        let targs = TimelineArgs {
            secret: SECRET_ID.into(),
            db: Some(self.db.clone()),
            format: TimelineFormat::Text,
        };
        let mut text = Vec::new();
        let timeline = timeline_to(&targs, Utc::now(), &mut text);
        io::stdout().write_all(&text)?;
        drop(agent);

        if let Some(keep) = &self.keep {
            println!(
                "\nKept the database and alerts in {}:\n  monitor query --db {} --secret {SECRET_ID}\n  monitor query --db {} --kind events --secret {SECRET_ID}\n  monitor timeline --db {} --secret {SECRET_ID} --format dot | dot -Tsvg > demo.svg",
                keep.display(),
                self.db.display(),
                self.db.display(),
                self.db.display()
            );
        }

        let mut problems: Vec<String> = Vec::new();
        if missing.is_empty() {
            println!("\nAll {} rules fired.", ALL_RULES.len());
        } else {
            let names: Vec<&str> = missing.iter().map(|r| r.name()).collect();
            println!(
                "\nNOT FIRED within {} each: {}",
                humantime(self.timeout),
                names.join(", ")
            );
            problems.push(format!(
                "{} of {} rules did not fire ({})",
                missing.len(),
                ALL_RULES.len(),
                names.join(", ")
            ));
        }
        for (n, rule, why) in &self.failed {
            println!(
                "  step {n}{} failed: {why}",
                rule.map(|r| format!(" ({})", r.name())).unwrap_or_default()
            );
        }
        if !self.failed.is_empty() {
            problems.push(format!("{} step(s) failed", self.failed.len()));
        }
        if !problems.is_empty() {
            let warnings: Vec<&String> = agent_log
                .iter()
                .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("lost"))
                .collect();
            if !warnings.is_empty() {
                println!("  the agent warned:");
                for l in warnings.iter().rev().take(20).rev() {
                    println!("    {}", clean(l));
                }
            }
        }
        if let Err(e) = timeline {
            println!("\nNo timeline: {e:#}");
            problems.push("no timeline".into());
        }
        if !st.success() {
            problems.push(format!("the agent did not exit cleanly ({st})"));
        }
        if problems.is_empty() {
            return Ok(ExitCode::SUCCESS);
        }
        eprintln!("monitor: demo failed: {}", problems.join("; "));
        Ok(ExitCode::FAILURE)
    }

    /// The agent knows the secret's value (from the holder's environment
    /// at issuance, or the holder's read of its file).
    fn wait_learned(&mut self) -> Result<()> {
        let t0 = Instant::now();
        loop {
            let (st, v) = self.api_request("GET", "/secrets", None)?;
            let learned = st == 200
                && v.as_array().is_some_and(|a| {
                    a.iter()
                        .any(|s| s["secret_id"] == SECRET_ID && s["learned"] == true)
                });
            if learned {
                return Ok(());
            }
            if t0.elapsed() > self.timeout {
                bail!("the agent did not learn the secret's value");
            }
            self.settle(Duration::from_millis(100))?;
        }
    }
}
