/*
 * Unit tests of the config loader (common/config.c), config_pack/unpack
 * (common/config_pack.c) and the parsers of common/util.c.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "test.h"
#include "util.h"

/* Load text as "t.yaml"; the errors, NUL-terminated, into *errs. */
static struct config *
load(const char *text, char **errs)
{
	struct config *cfg;
	struct buf e;

	buf_init(&e, 0);
	cfg = config_load_mem("t.yaml", text, strlen(text), &e);
	buf_add_u8(&e, 0);
	*errs = strdup((char *)e.data);
	buf_free(&e);
	return cfg;
}

static int
expect_errors(const char *text, const char *want)
{
	struct config *cfg;
	char *got;
	int ok;

	cfg = load(text, &got);
	ok = cfg == NULL && got != NULL && strcmp(got, want) == 0;
	if (!ok)
		fprintf(stderr, "config:\n%s\nwant:\n%sgot:\n%s\n", text, want,
		    got ? got : "(null)");
	config_free(cfg);
	free(got);
	return ok;
}

static struct config *
load_ok(const char *text)
{
	struct config *cfg;
	char *errs;

	cfg = load(text, &errs);
	if (cfg == NULL)
		fprintf(
		    stderr, "config:\n%s\nunexpected errors:\n%s", text, errs);
	free(errs);
	return cfg;
}

static int
ncpu(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	if (n < 1)
		return 1;
	return n > 64 ? 64 : (int)n;
}

/* The antivirus defaults of the built-in actions. */
static void
check_av_defaults(const struct cfg_antivirus *av)
{
	CHECK(av->enabled == 1);
	CHECK(strcmp(av->database, "/var/lib/clamav") == 0);
	CHECK(av->on_virus == ACT_STRIP && av->on_error == ACT_DENY);
	CHECK(av->max_scan_size == 100 * 1024 * 1024);
	CHECK(av->max_file_size == 25 * 1024 * 1024);
	CHECK(av->max_recursion == 17 && av->max_files == 10000);
	CHECK(av->max_scan_time_ms == 120 * 1000);
}

static void
test_default(void)
{
	struct config *cfg;
	struct buf e;
	int i;

	buf_init(&e, 0);
	cfg = config_load_mem(
	    "<built-in>", config_default_yaml, config_default_yaml_len, &e);
	CHECK(cfg != NULL);
	CHECK(e.len == 0);
	if (e.len)
		fprintf(stderr, "%.*s", (int)e.len, (char *)e.data);
	buf_free(&e);
	if (cfg == NULL)
		return;
	CHECK(strcmp(cfg->file, "<built-in>") == 0);
	CHECK(cfg->role == ROLE_PARENT);
	CHECK(strcmp(cfg->user, "_imapgw") == 0);
	CHECK(strcmp(cfg->chroot, "/var/empty") == 0);
	CHECK(strcmp(cfg->state_dir, "/var/lib/imapgw") == 0);
	for (i = ROLE_NETD; i < ROLE_MAX; i++)
		CHECK(cfg->workers[i] == ncpu());
	CHECK(cfg->log_target == LOGT_SYSLOG);
	CHECK(cfg->log_format == LOGF_TEXT);
	CHECK(cfg->log_level == LOG_INFO);
	CHECK(strcmp(cfg->control_socket, "/run/imapgwd.sock") == 0);
	CHECK(cfg->nservers == 1);
	CHECK(strcmp(cfg->servers[0].name, "mailstore") == 0);
	CHECK(cfg->servers[0].balance == BALANCE_ROUND_ROBIN);
	CHECK(cfg->servers[0].tls == SRV_TLS_NONE);
	CHECK(cfg->servers[0].connect_timeout_ms == 10000);
	CHECK(cfg->servers[0].nmembers == 1);
	CHECK(
	    strcmp(cfg->servers[0].members[0].addr.text, "127.0.0.1:143") == 0);
	CHECK(cfg->nactions >= 2);
	CHECK(strcmp(cfg->actions[0].name, "IMAP-Server.Standard") == 0);
	CHECK(strcmp(cfg->actions[1].name, "IMAP-Client.Standard") == 0);
	CHECK(cfg->actions[0].builtin && cfg->actions[1].builtin);
	CHECK(cfg->npolicies == 1);
	CHECK(strcmp(cfg->policies[0].name, "imap-in") == 0);
	CHECK(cfg->policies[0].nlisten == 1);
	CHECK(strcmp(cfg->policies[0].listen[0].addr.text, "127.0.0.1:1143") ==
	      0);
	CHECK(cfg->policies[0].nfrom == 1);
	CHECK(cfg->policies[0].from[0].family == AF_UNSPEC);
	CHECK(cfg->policies[0].server == 0);
	CHECK(cfg->policies[0].disposition == DISP_ALLOW);
	CHECK(cfg->policies[0].idle_timeout_ms == 30 * 60 * 1000);
	CHECK(cfg->policies[0].actionidx >= 0);
	/* The default's own action: antivirus on, ClamAV's limits. */
	if (cfg->policies[0].actionidx >= 0) {
		check_av_defaults(
		    &cfg->actions[cfg->policies[0].actionidx].antivirus);
		CHECK(cfg->actions[cfg->policies[0].actionidx].used);
	}
	config_free(cfg);
}

/* A minimal valid file has every default. */
static void
test_minimal(void)
{
	struct config *cfg;
	const struct cfg_action *a;

	cfg = load_ok("user: _imapgw\n");
	CHECK(cfg != NULL);
	if (cfg == NULL)
		return;
	CHECK(strcmp(cfg->chroot, "/var/empty") == 0);
	CHECK(strcmp(cfg->control_socket, "/run/imapgwd.sock") == 0);
	CHECK(cfg->nservers == 0 && cfg->npolicies == 0);
	CHECK(cfg->nactions == 2);
	a = &cfg->actions[0];
	CHECK(a->builtin && a->inherit == NULL);
	CHECK(a->general.max_email_size == 50 * 1024 * 1024);
	CHECK(a->general.oversize == ACT_DENY);
	CHECK(a->general.max_line_length == 64 * 1024);
	CHECK(strstr(a->deny_message, "%(reason)%") != NULL);
	check_av_defaults(&cfg->actions[0].antivirus);
	check_av_defaults(&cfg->actions[1].antivirus);
	/* No policy refers to them: scand loads no engine for them. */
	CHECK(!cfg->actions[0].used && !cfg->actions[1].used);
	config_free(cfg);
}

static const char full_yaml[] =
    "user: gw\n"
    "chroot: /var/lib/imapgw/empty\n"
    "state_dir: /srv/imapgw\n"
    "workers: { netd: 3, scand: auto, tlsd: 64 }\n"
    "log: { target: stderr, format: json, level: debug }\n"
    "control: { socket: /tmp/gw.sock }\n"
    "servers:\n"
    "  pool-a:\n"
    "    balance: least-connection\n"
    "    tls: none\n"
    "    send_id: false\n"
    "    connect_timeout: 1500ms\n"
    "    members:\n"
    "      - 192.0.2.10:993\n"
    "      - { address: \"[2001:db8::1]:993\", weight: 100 }\n"
    "      - { address: \"localhost:1993\" }\n"
    "  pool-b:\n"
    "    members: [ \"127.0.0.1:143\" ]\n"
    "actions:\n"
    "  child:\n"
    "    inherit: parent\n"
    "    general: { oversize: drop }\n"
    "  parent:\n"
    "    inherit: IMAP-Client.Standard\n"
    "    general: { max_email_size: 10M, max_line_length: 1k }\n"
    "    antivirus:\n"
    "      database: /srv/clamav\n"
    "      on_virus: deny\n"
    "      on_error: drop\n"
    "      max_scan_size: 4000M\n"
    "      max_file_size: 1K\n"
    "      max_recursion: 100\n"
    "      max_files: 1\n"
    "      max_scan_time: 1ms\n"
    "    deny_message: \"no: %(reason)%\"\n"
    "  plain:\n"
    "    general: { oversize: allow }\n"
    "    antivirus: { enabled: false, on_virus: allow, on_error: allow }\n"
    "policies:\n"
    "  - name: one\n"
    "    listen: 127.0.0.1:1143\n"
    "    to: pool-b\n"
    "  - name: two\n"
    "    listen: [ \"0.0.0.0:1143\",\n"
    "              { address: \"[::]:1993\", tls: none } ]\n"
    "    from: [ 10.1.2.3/8, \"2001:db8::/32\", 192.0.2.1 ]\n"
    "    to: pool-a\n"
    "    disposition: deny-reset\n"
    "    action: child\n"
    "    idle_timeout: 2h\n";

static void
test_full(void)
{
	struct config *cfg;
	const struct cfg_server *s;
	const struct cfg_policy *p;
	const struct cfg_action *a;

	cfg = load_ok(full_yaml);
	CHECK(cfg != NULL);
	if (cfg == NULL)
		return;
	CHECK(strcmp(cfg->user, "gw") == 0);
	CHECK(strcmp(cfg->state_dir, "/srv/imapgw") == 0);
	CHECK(cfg->workers[ROLE_NETD] == 3);
	CHECK(cfg->workers[ROLE_SCAND] == ncpu());
	CHECK(cfg->workers[ROLE_TLSD] == 64);
	CHECK(cfg->log_target == LOGT_STDERR && cfg->log_format == LOGF_JSON);
	CHECK(cfg->log_level == LOG_DEBUG);
	CHECK(strcmp(cfg->control_socket, "/tmp/gw.sock") == 0);
	CHECK(cfg->nservers == 2);
	s = &cfg->servers[0];
	CHECK(strcmp(s->name, "pool-a") == 0);
	CHECK(s->balance == BALANCE_LEAST_CONN && s->tls == SRV_TLS_NONE);
	CHECK(s->send_id == 0 && cfg->servers[1].send_id == 1);
	CHECK(s->connect_timeout_ms == 1500);
	CHECK(s->nmembers == 3);
	CHECK(strcmp(s->members[0].host, "192.0.2.10:993") == 0);
	CHECK(strcmp(s->members[0].addr.text, "192.0.2.10:993") == 0);
	CHECK(s->members[0].weight == 1);
	CHECK(s->members[0].pos.line == 14 && s->members[0].pos.col == 9);
	CHECK(strcmp(s->members[1].addr.text, "[2001:db8::1]:993") == 0);
	CHECK(s->members[1].addr.ss.ss_family == AF_INET6);
	CHECK(s->members[1].weight == 100);
	/* A host name, resolved at load (localhost is in /etc/hosts). */
	CHECK(strcmp(s->members[2].host, "localhost:1993") == 0);
	CHECK(s->members[2].addr.ss.ss_family == AF_INET ||
	      s->members[2].addr.ss.ss_family == AF_INET6);
	CHECK(strstr(s->members[2].addr.text, ":1993") != NULL);
	CHECK(cfg->servers[1].balance == BALANCE_ROUND_ROBIN);
	CHECK(cfg->servers[1].connect_timeout_ms == 10000);

	CHECK(cfg->nactions == 5);
	a = &cfg->actions[2]; /* child -> parent -> IMAP-Client.Standard */
	CHECK(strcmp(a->name, "child") == 0 && !a->builtin);
	CHECK(strcmp(a->inherit, "parent") == 0);
	CHECK(a->general.max_email_size == 10 * 1024 * 1024);
	CHECK(a->general.oversize == ACT_DROP);
	CHECK(a->general.max_line_length == 1024);
	CHECK(strcmp(a->deny_message, "no: %(reason)%") == 0);
	/* antivirus inherited through two levels */
	CHECK(a->antivirus.enabled == 1);
	CHECK(strcmp(a->antivirus.database, "/srv/clamav") == 0);
	CHECK(a->antivirus.on_virus == ACT_DENY);
	CHECK(a->antivirus.on_error == ACT_DROP);
	CHECK(a->antivirus.max_scan_size == 4000ULL * 1024 * 1024);
	CHECK(a->antivirus.max_file_size == 1024);
	CHECK(a->antivirus.max_recursion == 100);
	CHECK(a->antivirus.max_files == 1);
	CHECK(a->antivirus.max_scan_time_ms == 1);
	CHECK(a->used);
	a = &cfg->actions[3];
	CHECK(strcmp(a->name, "parent") == 0);
	CHECK(a->general.oversize == ACT_DENY);
	CHECK(a->antivirus.on_virus == ACT_DENY && !a->used);
	a = &cfg->actions[4];
	CHECK(a->inherit == NULL && a->general.oversize == ACT_ALLOW);
	CHECK(a->general.max_email_size == 50 * 1024 * 1024);
	CHECK(strcmp(a->deny_message, cfg->actions[0].deny_message) == 0);
	/* Only the keys it sets differ from IMAP-Server.Standard. */
	CHECK(a->antivirus.enabled == 0);
	CHECK(a->antivirus.on_virus == ACT_ALLOW);
	CHECK(a->antivirus.on_error == ACT_ALLOW);
	CHECK(strcmp(a->antivirus.database, "/var/lib/clamav") == 0);
	CHECK(a->antivirus.max_files == 10000 && !a->used);
	check_av_defaults(&cfg->actions[1].antivirus);
	/* Policy one uses the default action, two uses child. */
	CHECK(cfg->actions[0].used && !cfg->actions[1].used);

	CHECK(cfg->npolicies == 2);
	p = &cfg->policies[0];
	CHECK(p->server == 1 && p->actionidx == 0);
	CHECK(strcmp(p->action, "IMAP-Server.Standard") == 0);
	CHECK(p->nlisten == 1 && p->listen[0].tls == LISTEN_TLS_NONE);
	CHECK(p->nfrom == 1 && p->from[0].family == AF_UNSPEC);
	CHECK(p->pos.line == 40 && p->pos.col == 5);
	p = &cfg->policies[1];
	CHECK(p->server == 0 && p->actionidx == 2);
	CHECK(p->disposition == DISP_DENY_RESET);
	CHECK(p->idle_timeout_ms == 2 * 3600 * 1000);
	CHECK(p->nlisten == 2);
	CHECK(strcmp(p->listen[1].addr.text, "[::]:1993") == 0);
	CHECK(p->listen[1].tls == LISTEN_TLS_NONE);
	CHECK(p->nfrom == 3);
	CHECK(strcmp(p->from[0].text, "10.0.0.0/8") == 0);
	CHECK(strcmp(p->from[1].text, "2001:db8::/32") == 0);
	CHECK(strcmp(p->from[2].text, "192.0.2.1/32") == 0);
	config_free(cfg);
}

/* Broken files and the exact errors they give. */
static const struct {
	const char *text;
	const char *errs;
} broken[] = {
    /* TLS arrives with its own issue: refused, not silently ignored. */
    {"servers:\n"
     "  s:\n"
     "    tls: starttls\n"
     "    send_id: maybe\n"
     "    members: [\"10.0.0.1:143\"]\n"
     "policies:\n"
     "  - name: p\n"
     "    listen: { address: \"127.0.0.1:1993\", tls: implicit }\n"
     "    to: s\n",
        "t.yaml:3:10: tls: starttls to the servers is not implemented yet; "
        "use none\n"
        "t.yaml:4:14: 'send_id' must be true or false\n"
        "t.yaml:8:47: tls: implicit listeners are not implemented yet; use "
        "none\n"},
    {"", "t.yaml:1:1: empty configuration\n"},
    {"# comments only\n\n", "t.yaml:1:1: empty configuration\n"},
    {"- a\n- b\n", "t.yaml:1:1: the top level must be a mapping\n"},
    {"just a string\n", "t.yaml:1:1: the top level must be a mapping\n"},
    {"user: a\n  bad: indentation\n",
        "t.yaml:2:6: syntax error: mapping values are not allowed in "
        "this context\n"},
    {"servers:\n  s:\n    members: [ \"127.0.0.1:143\n",
        "t.yaml:4:1: syntax error: found unexpected end of stream "
        "(while scanning a quoted scalar at line 3)\n"},
    {"user: \xff\n", "t.yaml:1:7: syntax error: invalid leading UTF-8 octet\n"},
    {"---\na: 1\n---\nb: 2\n",
        "t.yaml:3:1: only one YAML document is allowed\n"},
    {"user: &u a\nstate_dir: *u\n", "t.yaml:2:12: aliases are not supported\n"},
    {"user: \"a\\0b\"\n", "t.yaml:1:7: value contains a NUL byte\n"},
    {"foo: 1\nuser: x\nbar: [1]\n",
        "t.yaml:1:1: unknown key 'foo' in top level\n"
        "t.yaml:3:1: unknown key 'bar' in top level\n"},
    {"user: a\nuser: b\n",
        "t.yaml:2:1: duplicate key 'user' in top level (first at line 1)\n"},
    {"user: [a]\nchroot: var/empty\nstate_dir: \"\"\n",
        "t.yaml:1:7: 'user' must be a string\n"
        "t.yaml:2:9: 'chroot' must be an absolute path\n"
        "t.yaml:3:12: 'state_dir' must not be empty\n"},
    {"workers: {netd: 0, scand: x, tlsd: 65, httpd: 1}\n",
        "t.yaml:1:17: 'netd' must be an integer from 1 to 64 or auto\n"
        "t.yaml:1:27: 'scand' must be an integer from 1 to 64 or auto\n"
        "t.yaml:1:36: 'tlsd' must be an integer from 1 to 64 or auto\n"
        "t.yaml:1:40: unknown key 'httpd' in workers\n"},
    {"workers: 4\nlog: [stderr]\n", "t.yaml:1:10: 'workers' must be a mapping\n"
                                    "t.yaml:2:6: 'log' must be a mapping\n"},
    {"log: {target: file, format: xml, level: loud}\n",
        "t.yaml:1:15: target must be syslog or stderr\n"
        "t.yaml:1:29: format must be text or json\n"
        "t.yaml:1:41: level must be error, warning, notice, info or "
        "debug\n"},
    {"control:\n  socket: run/gw.sock\n  mode: 0600\n",
        "t.yaml:2:11: 'socket' must be an absolute path\n"
        "t.yaml:3:3: unknown key 'mode' in control\n"},
    {"control: {socket: /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa}\n",
        "t.yaml:1:19: 'socket' is too long (at most 107 bytes)\n"},
    {"servers: [a]\nactions: 5\npolicies: {a: 1}\n",
        "t.yaml:1:10: 'servers' must be a mapping\n"
        "t.yaml:2:10: 'actions' must be a mapping\n"
        "t.yaml:3:11: 'policies' must be a sequence\n"},
    {"servers:\n"
     "  a: {members: [\"10.0.0.1:143\"]}\n"
     "  a: {members: [\"10.0.0.2:143\"]}\n",
        "t.yaml:3:3: duplicate key 'a' in servers (first at line 2)\n"},
    {"servers:\n  a: {members: []}\n  b: {tls: none}\n  c:\n",
        "t.yaml:2:16: 'members' must not be empty\n"
        "t.yaml:3:6: missing required key 'members' in server 'b'\n"
        "t.yaml:4:5: missing required key 'members' in server 'c'\n"},
    {"servers:\n"
     "  s:\n"
     "    balance: random\n"
     "    tls: ssl\n"
     "    connect_timeout: 5x\n"
     "    port: 143\n"
     "    members: [\"10.0.0.1:143\"]\n",
        "t.yaml:3:14: balance must be round-robin or least-connection\n"
        "t.yaml:4:10: tls must be none, starttls or implicit\n"
        "t.yaml:5:22: bad duration '5x' (use a number with s, m, h or "
        "d)\n"
        "t.yaml:6:5: unknown key 'port' in server 's'\n"},
    {"servers:\n"
     "  s:\n"
     "    members:\n"
     "      - 10.0.0.1:0\n"
     "      - 10.0.0.1\n"
     "      - \"::1:143\"\n"
     "      - { address: \"10.0.0.1:143\", weight: 101 }\n"
     "      - { weight: 2 }\n"
     "      - { address: \"10.0.0.1:143\", port: 1 }\n"
     "      - [ 10.0.0.1 ]\n",
        "t.yaml:4:9: bad address '10.0.0.1:0' (use host:port or "
        "[ipv6]:port)\n"
        "t.yaml:5:9: bad address '10.0.0.1' (use host:port or "
        "[ipv6]:port)\n"
        "t.yaml:6:9: bad address '::1:143' (use host:port or "
        "[ipv6]:port)\n"
        "t.yaml:7:44: 'weight' must be an integer from 1 to 100\n"
        "t.yaml:8:9: missing required key 'address' in member of server "
        "'s'\n"
        "t.yaml:9:36: unknown key 'port' in member of server 's'\n"
        "t.yaml:10:9: a member must be a string or a mapping\n"},
    {"servers: {s: {connect_timeout: 0, members: [\"[::1]:143\"]}}\n",
        "t.yaml:1:32: connect_timeout must not be 0\n"},
    {"actions:\n  IMAP-Server.Standard: {}\n  IMAP-Client.Standard:\n",
        "t.yaml:2:3: duplicate action 'IMAP-Server.Standard' (a built-in "
        "action has that name)\n"
        "t.yaml:3:3: duplicate action 'IMAP-Client.Standard' (a built-in "
        "action has that name)\n"},
    {"actions:\n  a: {inherit: nope}\n",
        "t.yaml:2:16: action 'a': no action named 'nope' to inherit "
        "from\n"},
    {"actions:\n"
     "  a: {inherit: b}\n"
     "  b: {inherit: c}\n"
     "  c: {inherit: a}\n"
     "  d: {inherit: d}\n"
     "  e: {inherit: a}\n",
        "t.yaml:2:16: inheritance cycle: a -> b -> c -> a\n"
        "t.yaml:5:16: inheritance cycle: d -> d\n"},
    {"actions:\n"
     "  a:\n"
     "    general:\n"
     "      max_email_size: 10Q\n"
     "      oversize: strip\n"
     "      max_line_length: 100\n"
     "      scan_limit: 1M\n"
     "    antivirus: {enabled: true}\n"
     "    apt_blocker: {enabled: true}\n",
        "t.yaml:4:23: bad size '10Q' (use a number with K, M or G)\n"
        "t.yaml:5:17: oversize must be allow, deny or drop\n"
        "t.yaml:6:24: max_line_length must be between 1K and 16M\n"
        "t.yaml:7:7: unknown key 'scan_limit' in general of action 'a'\n"
        "t.yaml:9:5: unknown key 'apt_blocker' in action 'a'\n"},
    {"actions:\n"
     "  a:\n"
     "    antivirus:\n"
     "      enabled: maybe\n"
     "      database: var/lib/clamav\n"
     "      on_virus: lock\n"
     "      on_error: strip\n"
     "      max_scan_size: 100\n"
     "      max_file_size: 4001M\n"
     "      max_recursion: 0\n"
     "      max_files: 1000001\n"
     "      max_scan_time: 0s\n"
     "      scan_mail: yes\n"
     "      enabled: true\n",
        "t.yaml:4:16: 'enabled' must be true or false\n"
        "t.yaml:5:17: 'database' must be an absolute path\n"
        "t.yaml:6:17: on_virus must be allow, strip, deny or drop\n"
        "t.yaml:7:17: on_error must be allow, deny or drop\n"
        "t.yaml:8:22: max_scan_size must be between 1K and 4000M\n"
        "t.yaml:9:22: max_file_size must be between 1K and 4000M\n"
        "t.yaml:10:22: 'max_recursion' must be an integer from 1 to 100\n"
        "t.yaml:11:18: 'max_files' must be an integer from 1 to 1000000\n"
        "t.yaml:12:22: max_scan_time must be between 1ms and 24h\n"
        "t.yaml:13:7: unknown key 'scan_mail' in antivirus of action 'a'\n"
        "t.yaml:14:7: duplicate key 'enabled' in antivirus of action 'a' "
        "(first at line 4)\n"},
    {"actions:\n"
     "  a: {antivirus: [x]}\n"
     "  b: {antivirus: {database: \"\", max_scan_time: 25h, "
     "max_scan_size: 1X}}\n"
     "  c: {antivirus: {enabled: [true], on_virus: [strip], "
     "max_files: -1}}\n",
        "t.yaml:2:18: 'antivirus' must be a mapping\n"
        "t.yaml:3:29: 'database' must not be empty\n"
        "t.yaml:3:48: max_scan_time must be between 1ms and 24h\n"
        "t.yaml:3:68: bad size '1X' (use a number with K, M or G)\n"
        "t.yaml:4:28: 'enabled' must be true or false\n"
        "t.yaml:4:46: 'on_virus' must be a string\n"
        "t.yaml:4:66: 'max_files' must be an integer from 1 to 1000000\n"},
    {"actions:\n"
     "  a:\n"
     "    general: 5\n"
     "    deny_message: \"\"\n"
     "    inherit: [x]\n"
     "  b: {general: {max_email_size: 100, max_line_length: 17M}}\n",
        "t.yaml:3:14: 'general' must be a mapping\n"
        "t.yaml:4:19: 'deny_message' must not be empty\n"
        "t.yaml:5:14: 'inherit' must be a string\n"
        "t.yaml:6:33: max_email_size must be at least 1K\n"
        "t.yaml:6:55: max_line_length must be between 1K and 16M\n"},
    {"policies:\n  - to: s\n  - 5\n  -\n",
        "t.yaml:2:5: missing required key 'name' in policy #1\n"
        "t.yaml:2:5: missing required key 'listen' in policy #1\n"
        "t.yaml:2:9: policy #1: no server pool named 's'\n"
        "t.yaml:3:5: policy #2 must be a mapping\n"
        "t.yaml:4:4: missing required key 'name' in policy #3\n"
        "t.yaml:4:4: missing required key 'listen' in policy #3\n"
        "t.yaml:4:4: missing required key 'to' in policy #3\n"},
    {"servers: {s: {members: [\"127.0.0.1:143\"]}}\n"
     "policies:\n"
     "  - name: p\n"
     "    listen: 127.0.0.1:1143\n"
     "    to: nopool\n"
     "    action: noaction\n"
     "    tls: {mode: enabled}\n",
        "t.yaml:5:9: policy 'p': no server pool named 'nopool'\n"
        "t.yaml:6:13: policy 'p': no action named 'noaction'\n"
        "t.yaml:7:5: unknown key 'tls' in policy 'p'\n"},
    {"servers: {s: {members: [\"127.0.0.1:143\"]}}\n"
     "policies:\n"
     "  - {name: p, listen: \"127.0.0.1:1143\", to: s}\n"
     "  - {name: p, listen: \"127.0.0.1:1144\", to: s}\n"
     "  - {name: q, listen: [\"127.0.0.1:1145\", \"127.0.0.1:1144\"], "
     "to: s}\n",
        "t.yaml:4:12: duplicate policy name 'p' (first at line 3)\n"
        "t.yaml:5:42: duplicate listen address '127.0.0.1:1144' (first "
        "at line 4)\n"},
    {"servers: {s: {members: [\"127.0.0.1:143\"]}}\n"
     "policies:\n"
     "  - name: p\n"
     "    to: s\n"
     "    listen:\n"
     "      - localhost:1143\n"
     "      - \"[::1]\"\n"
     "      - { address: \"127.0.0.1:1\", tls: starttls }\n"
     "      - { tls: none }\n"
     "      - [ x ]\n",
        "t.yaml:6:9: bad address 'localhost:1143' (use a.b.c.d:port or "
        "[ipv6]:port)\n"
        "t.yaml:7:9: bad address '[::1]' (use a.b.c.d:port or "
        "[ipv6]:port)\n"
        "t.yaml:8:40: tls must be none or implicit\n"
        "t.yaml:9:9: missing required key 'address' in listen of policy "
        "'p'\n"
        "t.yaml:10:9: a listen entry must be a string or a mapping\n"},
    {"servers: {s: {members: [\"127.0.0.1:143\"]}}\n"
     "policies:\n"
     "  - name: p\n"
     "    to: s\n"
     "    listen: []\n"
     "    from: [any, 10.0.0.0/33, example.org, [1]]\n"
     "    disposition: reject\n"
     "    idle_timeout: 500ms\n"
     "  - name: q\n"
     "    to: s\n"
     "    listen: 127.0.0.1:1\n"
     "    from: []\n"
     "    idle_timeout: 30 minutes\n",
        "t.yaml:5:13: 'listen' must not be empty\n"
        "t.yaml:6:17: bad CIDR '10.0.0.0/33' (use any, an address or "
        "address/prefix)\n"
        "t.yaml:6:30: bad CIDR 'example.org' (use any, an address or "
        "address/prefix)\n"
        "t.yaml:6:43: 'from' entries must be strings\n"
        "t.yaml:7:18: disposition must be allow, deny or deny-reset\n"
        "t.yaml:8:19: idle_timeout must be at least 1s\n"
        "t.yaml:12:11: 'from' must not be empty\n"
        "t.yaml:13:19: bad duration '30 minutes' (use a number with s, "
        "m, h or d)\n"},
    /* Many errors in many sections, all reported, in file order. */
    {"user: [x]\n"
     "policies:\n"
     "  - name: p\n"
     "    listen: 1.2.3.4:99999\n"
     "    to: s\n"
     "servers:\n"
     "  s:\n"
     "    members: [\"10.0.0.1\"]\n"
     "    weight: 2\n"
     "actions:\n"
     "  a: {inherit: a, general: {oversize: tag}}\n"
     "log: {level: verbose}\n"
     "bogus: true\n",
        "t.yaml:1:7: 'user' must be a string\n"
        "t.yaml:4:13: bad address '1.2.3.4:99999' (use a.b.c.d:port or "
        "[ipv6]:port)\n"
        "t.yaml:8:15: bad address '10.0.0.1' (use host:port or "
        "[ipv6]:port)\n"
        "t.yaml:9:5: unknown key 'weight' in server 's'\n"
        "t.yaml:11:16: inheritance cycle: a -> a\n"
        "t.yaml:11:39: oversize must be allow, deny or drop\n"
        "t.yaml:12:14: level must be error, warning, notice, info or "
        "debug\n"
        "t.yaml:13:1: unknown key 'bogus' in top level\n"},
};

/* Limits: nesting depth and number of keys. */
static void
test_limits(void)
{
	struct buf t;
	int i;

	buf_init(&t, 0);
	buf_printf(&t, "a: ");
	for (i = 0; i < 40; i++)
		buf_printf(&t, "[");
	for (i = 0; i < 40; i++)
		buf_printf(&t, "]");
	buf_printf(&t, "\n");
	buf_add_u8(&t, 0);
	CHECK(expect_errors((char *)t.data,
	    "t.yaml:1:35: nesting too deep (at most 32 levels)\n"));

	buf_reset(&t);
	for (i = 0; i < CONFIG_MAX_ITEMS + 1; i++)
		buf_printf(&t, "k%d: 1\n", i);
	buf_add_u8(&t, 0);
	CHECK(expect_errors((char *)t.data,
	    "t.yaml:1:1: too many keys in top level (at most 1024)\n"));
	buf_free(&t);
}

/* 1010 unknown keys: the first 1000 errors, then a count of the rest. */
static void
test_error_cap(void)
{
	const char *first = "t.yaml:1:1: unknown key 'k0' in top level\n";
	const char *tail = "t.yaml:1000:1: unknown key 'k999' in top level\n"
	                   "t.yaml:0:0: too many errors, 10 more not shown\n";
	struct config *cfg;
	char *errs;
	struct buf t;
	size_t n;
	int i;

	buf_init(&t, 0);
	for (i = 0; i < 1010; i++)
		buf_printf(&t, "k%d: 1\n", i);
	buf_add_u8(&t, 0);
	cfg = load((char *)t.data, &errs);
	CHECK(cfg == NULL);
	CHECK(strncmp(errs, first, strlen(first)) == 0);
	n = strlen(errs);
	CHECK(n > strlen(tail) && strcmp(errs + n - strlen(tail), tail) == 0);
	free(errs);
	buf_free(&t);
}

static void
test_broken(void)
{
	size_t i;

	for (i = 0; i < sizeof(broken) / sizeof(broken[0]); i++)
		CHECK(expect_errors(broken[i].text, broken[i].errs));
	printf("test_config: %zu broken configurations\n", i);
}

/* The message of a resolver failure comes from the system: check the
 * prefix only. */
static void
test_unresolvable(void)
{
	const char *want = "t.yaml:1:25: cannot resolve host "
	                   "'nonexistent.invalid': ";
	struct config *cfg;
	char *errs;

	cfg =
	    load("servers: {s: {members: [nonexistent.invalid:143]}}\n", &errs);
	CHECK(cfg == NULL);
	CHECK(strncmp(errs, want, strlen(want)) == 0);
	CHECK(strchr(errs, '\n') == errs + strlen(errs) - 1);
	free(errs);
	config_free(cfg);
}

static void
test_sizes(void)
{
	static const struct {
		const char *s;
		int ok;
		uint64_t v;
	} t[] = {
	    {"0", 1, 0},
	    {"1024", 1, 1024},
	    {"64K", 1, 65536},
	    {"64k", 1, 65536},
	    {"50M", 1, 50ULL << 20},
	    {"2g", 1, 2ULL << 30},
	    {"16777216G", 1, 16777216ULL << 30},
	    {"17179869184G", 0, 0},
	    {"18446744073709551615", 1, UINT64_MAX},
	    {"18446744073709551616", 0, 0},
	    {"", 0, 0},
	    {"K", 0, 0},
	    {"-1", 0, 0},
	    {" 1", 0, 0},
	    {"1 K", 0, 0},
	    {"1KB", 0, 0},
	    {"1T", 0, 0},
	    {"1.5M", 0, 0},
	};
	uint64_t v;
	size_t i;
	int r;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		v = 12345;
		r = parse_size(t[i].s, &v);
		CHECK(r == (t[i].ok ? 0 : -1));
		if (t[i].ok)
			CHECK(v == t[i].v);
		if (r != (t[i].ok ? 0 : -1))
			fprintf(stderr, "parse_size '%s'\n", t[i].s);
	}
	CHECK(parse_size(NULL, &v) == -1);
}

static void
test_durations(void)
{
	static const struct {
		const char *s;
		int ok;
		uint64_t v;
	} t[] = {
	    {"0", 1, 0},
	    {"30", 1, 30000},
	    {"500ms", 1, 500},
	    {"10s", 1, 10000},
	    {"30m", 1, 1800000},
	    {"2h", 1, 7200000},
	    {"1d", 1, 86400000},
	    {"213503982334d", 1, 18446744073657600000ULL},
	    {"213503982335d", 0, 0},
	    {"", 0, 0},
	    {"s", 0, 0},
	    {"10S", 0, 0},
	    {"10 s", 0, 0},
	    {"1w", 0, 0},
	    {"1.5h", 0, 0},
	    {"-5s", 0, 0},
	    {"5sec", 0, 0},
	    {"5mss", 0, 0},
	};
	uint64_t v;
	size_t i;
	int r;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		r = parse_duration(t[i].s, &v);
		CHECK(r == (t[i].ok ? 0 : -1));
		if (t[i].ok)
			CHECK(v == t[i].v);
		if (r != (t[i].ok ? 0 : -1))
			fprintf(stderr, "parse_duration '%s'\n", t[i].s);
	}
}

static void
test_addrs(void)
{
	static const struct {
		const char *s;
		const char *text; /* NULL: must fail */
		int family;
	} t[] = {
	    {"127.0.0.1:143", "127.0.0.1:143", AF_INET},
	    {"0.0.0.0:65535", "0.0.0.0:65535", AF_INET},
	    {"[::1]:143", "[::1]:143", AF_INET6},
	    {"[2001:DB8:0:0::1]:993", "[2001:db8::1]:993", AF_INET6},
	    {"[::ffff:192.0.2.1]:1", "[::ffff:192.0.2.1]:1", AF_INET6},
	    {"127.0.0.1:0", NULL, 0},
	    {"127.0.0.1:65536", NULL, 0},
	    {"127.0.0.1:", NULL, 0},
	    {"127.0.0.1", NULL, 0},
	    {"127.1:143", NULL, 0},
	    {"256.0.0.1:143", NULL, 0},
	    {"::1:143", NULL, 0},
	    {"[::1]143", NULL, 0},
	    {"[127.0.0.1]:143", NULL, 0},
	    {"[]:143", NULL, 0},
	    {"localhost:143", NULL, 0},
	    {":143", NULL, 0},
	    {"1.2.3.4:+1", NULL, 0},
	    {"1.2.3.4:0x10", NULL, 0},
	    {"", NULL, 0},
	};
	struct cfg_addr a;
	size_t i;
	int r;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		r = parse_addr(t[i].s, &a);
		CHECK(r == (t[i].text ? 0 : -1));
		if (r != (t[i].text ? 0 : -1))
			fprintf(stderr, "parse_addr '%s'\n", t[i].s);
		if (r != 0 || t[i].text == NULL)
			continue;
		CHECK(strcmp(a.text, t[i].text) == 0);
		CHECK(a.ss.ss_family == t[i].family);
		CHECK(a.len == (t[i].family == AF_INET
		                       ? sizeof(struct sockaddr_in)
		                       : sizeof(struct sockaddr_in6)));
	}
	CHECK(parse_addr("192.0.2.7:1143", &a) == 0);
	CHECK(ntohs(((struct sockaddr_in *)&a.ss)->sin_port) == 1143);
}

static void
test_cidrs(void)
{
	static const struct {
		const char *s;
		const char *text; /* NULL: must fail */
	} t[] = {
	    {"any", "any"},
	    {"10.0.0.0/8", "10.0.0.0/8"},
	    {"10.1.2.3/8", "10.0.0.0/8"},
	    {"192.0.2.1", "192.0.2.1/32"},
	    {"192.0.2.255/25", "192.0.2.128/25"},
	    {"0.0.0.0/0", "0.0.0.0/0"},
	    {"::1", "::1/128"},
	    {"2001:db8:ffff::/32", "2001:db8::/32"},
	    {"::/0", "::/0"},
	    {"10.0.0.0/33", NULL},
	    {"::/129", NULL},
	    {"10.0.0.0/", NULL},
	    {"10.0.0.0/-1", NULL},
	    {"10.0.0.0/8/8", NULL},
	    {"/8", NULL},
	    {"ANY", NULL},
	    {"10.0.0", NULL},
	    {"example.org", NULL},
	    {"", NULL},
	};
	struct cfg_cidr c;
	size_t i;
	int r;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		r = parse_cidr(t[i].s, &c);
		CHECK(r == (t[i].text ? 0 : -1));
		if (r != (t[i].text ? 0 : -1))
			fprintf(stderr, "parse_cidr '%s'\n", t[i].s);
		if (r == 0 && t[i].text != NULL)
			CHECK(strcmp(c.text, t[i].text) == 0);
	}
	CHECK(parse_cidr("any", &c) == 0 && c.family == AF_UNSPEC);
	CHECK(parse_cidr("10.0.0.0/8", &c) == 0 && c.family == AF_INET &&
	      c.prefix == 8);
	CHECK(parse_cidr("::1", &c) == 0 && c.family == AF_INET6 &&
	      c.prefix == 128);
}

static void
mk_sa(const char *ip, struct sockaddr_storage *ss)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, ip, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(1234);
	} else if (inet_pton(AF_INET6, ip, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(1234);
	} else
		abort();
}

static void
test_cidr_match(void)
{
	static const struct {
		const char *cidr;
		const char *ip;
		int match;
	} t[] = {
	    {"any", "192.0.2.1", 1},
	    {"any", "2001:db8::1", 1},
	    {"10.0.0.0/8", "10.255.1.2", 1},
	    {"10.0.0.0/8", "11.0.0.0", 0},
	    {"192.0.2.128/25", "192.0.2.200", 1},
	    {"192.0.2.128/25", "192.0.2.127", 0},
	    {"192.0.2.1", "192.0.2.1", 1},
	    {"192.0.2.1", "192.0.2.2", 0},
	    {"0.0.0.0/0", "203.0.113.9", 1},
	    {"0.0.0.0/0", "2001:db8::1", 0},
	    {"10.0.0.0/8", "::ffff:10.1.2.3", 1},
	    {"10.0.0.0/8", "::ffff:11.1.2.3", 0},
	    {"127.0.0.1", "::ffff:127.0.0.1", 1},
	    {"10.0.0.0/8", "::10.1.2.3", 0},
	    {"10.0.0.0/8", "64:ff9b::10.1.2.3", 0},
	    {"2001:db8::/32", "2001:db8:1::5", 1},
	    {"2001:db8::/32", "2001:db9::5", 0},
	    {"2001:db8::/33", "2001:db8:8000::1", 0},
	    {"::1", "::1", 1},
	    {"::1", "127.0.0.1", 0},
	    {"::/0", "2001:db8::1", 1},
	    {"::ffff:0:0/96", "192.0.2.1", 1},
	    {"::ffff:192.0.2.0/120", "192.0.2.77", 1},
	    {"::ffff:192.0.2.0/120", "192.0.3.77", 0},
	};
	struct sockaddr_storage ss;
	struct cfg_cidr c;
	size_t i;
	int m;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		CHECK(parse_cidr(t[i].cidr, &c) == 0);
		mk_sa(t[i].ip, &ss);
		m = cidr_match(&c, (struct sockaddr *)&ss);
		CHECK(m == t[i].match);
		if (m != t[i].match)
			fprintf(
			    stderr, "cidr_match %s %s\n", t[i].cidr, t[i].ip);
	}
	CHECK(parse_cidr("10.0.0.0/8", &c) == 0);
	CHECK(cidr_match(&c, NULL) == 0);
}

static void
test_addr_text(void)
{
	struct sockaddr_storage ss;
	char out[80];

	mk_sa("192.0.2.1", &ss);
	addr_text((struct sockaddr *)&ss, out, sizeof(out));
	CHECK(strcmp(out, "192.0.2.1:1234") == 0);
	mk_sa("2001:db8::1", &ss);
	addr_text((struct sockaddr *)&ss, out, sizeof(out));
	CHECK(strcmp(out, "[2001:db8::1]:1234") == 0);
	addr_text((struct sockaddr *)&ss, out, 6);
	CHECK(strcmp(out, "[2001") == 0);
	ss.ss_family = AF_UNIX;
	addr_text((struct sockaddr *)&ss, out, sizeof(out));
	CHECK(strcmp(out, "unix") == 0);
}

static void
test_action_names(void)
{
	static const char *names[] = {
	    "allow", "strip", "lock", "deny", "drop", "block", "tag", "header"};
	size_t i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		CHECK(action_from_name(names[i]) == (int)i);
		CHECK(strcmp(action_name((int)i), names[i]) == 0);
	}
	CHECK(action_from_name("ALLOW") == -1);
	CHECK(action_from_name("") == -1);
	CHECK(action_from_name(NULL) == -1);
	CHECK(action_from_name("quarantine") == -1);
	CHECK(ACT_ALLOW == 0 && ACT_TAG == 6 && ACT_HEADER == 7);
	CHECK(strcmp(action_name(-1), "unknown") == 0);
	CHECK(strcmp(action_name(8), "unknown") == 0);
}

static int
same_addr(const struct cfg_addr *a, const struct cfg_addr *b)
{
	return a->len == b->len && strcmp(a->text, b->text) == 0 &&
	       a->ss.ss_family == b->ss.ss_family;
}

static void
check_servers(const struct config *a, const struct config *b)
{
	size_t i, j;

	CHECK(a->nservers == b->nservers);
	for (i = 0; i < a->nservers && i < b->nservers; i++) {
		CHECK(strcmp(a->servers[i].name, b->servers[i].name) == 0);
		CHECK(a->servers[i].balance == b->servers[i].balance);
		CHECK(a->servers[i].tls == b->servers[i].tls);
		CHECK(a->servers[i].connect_timeout_ms ==
		      b->servers[i].connect_timeout_ms);
		CHECK(a->servers[i].nmembers == b->servers[i].nmembers);
		for (j = 0; j < a->servers[i].nmembers; j++) {
			const struct cfg_member *x = &a->servers[i].members[j];
			const struct cfg_member *y = &b->servers[i].members[j];

			CHECK(strcmp(x->host, y->host) == 0);
			CHECK(same_addr(&x->addr, &y->addr));
			CHECK(
			    memcmp(&x->addr.ss, &y->addr.ss, x->addr.len) == 0);
			CHECK(x->weight == y->weight);
			CHECK(x->pos.line == y->pos.line);
		}
	}
}

static void
check_av(const struct cfg_antivirus *x, const struct cfg_antivirus *y)
{
	CHECK(x->enabled == y->enabled);
	CHECK(strcmp(x->database, y->database) == 0);
	CHECK(x->on_virus == y->on_virus && x->on_error == y->on_error);
	CHECK(x->max_scan_size == y->max_scan_size);
	CHECK(x->max_file_size == y->max_file_size);
	CHECK(x->max_recursion == y->max_recursion);
	CHECK(x->max_files == y->max_files);
	CHECK(x->max_scan_time_ms == y->max_scan_time_ms);
}

static void
check_actions(const struct config *a, const struct config *b)
{
	size_t i;

	CHECK(a->nactions == b->nactions);
	for (i = 0; i < a->nactions && i < b->nactions; i++) {
		CHECK(strcmp(a->actions[i].name, b->actions[i].name) == 0);
		CHECK(a->actions[i].builtin == b->actions[i].builtin);
		CHECK(memcmp(&a->actions[i].general, &b->actions[i].general,
		          sizeof(a->actions[i].general)) == 0);
		CHECK(a->actions[i].used == b->actions[i].used);
		check_av(&a->actions[i].antivirus, &b->actions[i].antivirus);
		CHECK(strcmp(a->actions[i].deny_message,
		          b->actions[i].deny_message) == 0);
	}
}

static void
check_policies(const struct config *a, const struct config *b)
{
	const struct cfg_policy *x, *y;
	size_t i, j;

	CHECK(a->npolicies == b->npolicies);
	for (i = 0; i < a->npolicies && i < b->npolicies; i++) {
		x = &a->policies[i];
		y = &b->policies[i];
		CHECK(strcmp(x->name, y->name) == 0);
		CHECK(x->nlisten == y->nlisten && x->nfrom == y->nfrom);
		for (j = 0; j < x->nlisten && j < y->nlisten; j++) {
			CHECK(
			    same_addr(&x->listen[j].addr, &y->listen[j].addr));
			CHECK(x->listen[j].tls == y->listen[j].tls);
		}
		for (j = 0; j < x->nfrom && j < y->nfrom; j++) {
			CHECK(strcmp(x->from[j].text, y->from[j].text) == 0);
			CHECK(x->from[j].family == y->from[j].family);
			CHECK(x->from[j].prefix == y->from[j].prefix);
		}
		CHECK(strcmp(x->to, y->to) == 0 && x->server == y->server);
		CHECK(strcmp(x->action, y->action) == 0);
		CHECK(x->actionidx == y->actionidx);
		CHECK(x->disposition == y->disposition);
		CHECK(x->idle_timeout_ms == y->idle_timeout_ms);
		CHECK(x->pos.line == y->pos.line && x->pos.col == y->pos.col);
	}
}

/* Every proper prefix of the blob must be refused, without a crash. */
static void
check_truncations(const struct buf *b)
{
	struct config *u;
	size_t n, bad = 0;
	uint8_t *copy;

	for (n = 0; n < b->len; n++) {
		/* An exact-size copy, so ASan sees any overread. */
		copy = malloc(n ? n : 1);
		memcpy(copy, b->data, n);
		if ((u = config_unpack(copy, n)) != NULL) {
			bad++;
			config_free(u);
		}
		free(copy);
	}
	CHECK(bad == 0);
}

/* Flipped bytes: may or may not be refused, but never crash or leak. */
static void
check_corruptions(const struct buf *b)
{
	uint8_t *copy;
	size_t i;

	copy = malloc(b->len);
	for (i = 0; i < b->len; i++) {
		memcpy(copy, b->data, b->len);
		copy[i] ^= 0xff;
		config_free(config_unpack(copy, b->len));
		copy[i] ^= 0x7e;
		config_free(config_unpack(copy, b->len));
	}
	free(copy);
}

static void
test_pack_role(const struct config *cfg, enum imapgw_role role)
{
	struct config *u;
	struct buf b;
	uint8_t *big;

	buf_init(&b, 0);
	CHECK(config_pack(cfg, role, &b) == 0);
	u = config_unpack(b.data, b.len);
	CHECK(u != NULL);
	if (u != NULL) {
		CHECK(u->role == (int)role);
		CHECK(u->generation == cfg->generation);
		CHECK(u->log_target == cfg->log_target);
		CHECK(u->log_format == cfg->log_format);
		CHECK(u->log_level == cfg->log_level);
		CHECK(u->user == NULL && u->chroot == NULL);
		CHECK(u->state_dir == NULL && u->control_socket == NULL);
		if (role == ROLE_NETD) {
			check_servers(cfg, u);
			check_actions(cfg, u);
			check_policies(cfg, u);
		} else if (role == ROLE_SCAND) {
			CHECK(u->nservers == 0 && u->npolicies == 0);
			check_actions(cfg, u);
		} else
			CHECK(u->nservers == 0 && u->nactions == 0 &&
			      u->npolicies == 0);
		config_free(u);
	}
	check_truncations(&b);
	check_corruptions(&b);
	/* Trailing garbage is refused too. */
	big = malloc(b.len + 1);
	memcpy(big, b.data, b.len);
	big[b.len] = 0;
	CHECK(config_unpack(big, b.len + 1) == NULL);
	free(big);
	buf_free(&b);
}

static void
test_pack(void)
{
	struct config *cfg, *u;
	struct buf b;
	uint8_t hdr[8];

	cfg = load_ok(full_yaml);
	CHECK(cfg != NULL);
	if (cfg == NULL)
		return;
	cfg->generation = 42;
	test_pack_role(cfg, ROLE_NETD);
	test_pack_role(cfg, ROLE_SCAND);
	test_pack_role(cfg, ROLE_TLSD);
	buf_init(&b, 0);
	CHECK(config_pack(cfg, ROLE_PARENT, &b) == -1);
	/* A cap too small for the blob. */
	buf_init(&b, 64);
	CHECK(config_pack(cfg, ROLE_NETD, &b) == -1);
	buf_free(&b);
	config_free(cfg);

	CHECK(config_unpack(NULL, 0) == NULL);
	memset(hdr, 0, sizeof(hdr));
	CHECK(config_unpack(hdr, sizeof(hdr)) == NULL);

	/* The default, packed for netd, and a policy count too large. */
	cfg = config_load_mem(
	    "<built-in>", config_default_yaml, config_default_yaml_len, NULL);
	CHECK(cfg != NULL);
	if (cfg == NULL)
		return;
	buf_init(&b, 0);
	CHECK(config_pack(cfg, ROLE_NETD, &b) == 0);
	u = config_unpack(b.data, b.len);
	CHECK(u != NULL && u->npolicies == 1 && u->nservers == 1);
	config_free(u);
	buf_free(&b);
	cfg->npolicies = CONFIG_MAX_ITEMS + 1;
	buf_init(&b, 0);
	CHECK(config_pack(cfg, ROLE_NETD, &b) == -1);
	buf_free(&b);
	cfg->npolicies = 1;
	config_free(cfg);
}

static void
test_files(void)
{
	char path[] = "/tmp/test_config.XXXXXX", want[128];
	struct config *cfg;
	struct buf e;
	FILE *f;
	int fd;

	fd = mkstemp(path);
	CHECK(fd != -1);
	if (fd == -1)
		return;
	f = fdopen(fd, "w");
	fwrite(config_default_yaml, 1, config_default_yaml_len, f);
	fclose(f);
	buf_init(&e, 0);
	cfg = config_load(path, &e);
	CHECK(cfg != NULL && e.len == 0);
	CHECK(cfg != NULL && strcmp(cfg->file, path) == 0);
	config_free(cfg);

	/* A broken file: the path names the errors. */
	f = fopen(path, "w");
	fputs("user: a\nnope: 1\n", f);
	fclose(f);
	buf_reset(&e);
	CHECK(config_load(path, &e) == NULL);
	buf_add_u8(&e, 0);
	snprintf(want, sizeof(want),
	    "%s:2:1: unknown key 'nope' in top level\n", path);
	CHECK(strcmp((char *)e.data, want) == 0);
	unlink(path);

	buf_reset(&e);
	CHECK(config_load(path, &e) == NULL);
	buf_add_u8(&e, 0);
	snprintf(want, sizeof(want),
	    "%s:0:0: cannot open: No such file or directory\n", path);
	CHECK(strcmp((char *)e.data, want) == 0);

	buf_reset(&e);
	CHECK(config_load("/", &e) == NULL);
	buf_add_u8(&e, 0);
	CHECK(strcmp((char *)e.data, "/:0:0: cannot read: Is a directory\n") ==
	      0);
	buf_free(&e);

	/* No error buffer: still NULL, nothing else. */
	CHECK(config_load_mem("t.yaml", "x: 1\n", 5, NULL) == NULL);
	config_free(NULL);
}

int
main(void)
{
	test_default();
	test_minimal();
	test_full();
	test_broken();
	test_limits();
	test_error_cap();
	test_unresolvable();
	test_sizes();
	test_durations();
	test_addrs();
	test_cidrs();
	test_cidr_match();
	test_addr_text();
	test_action_names();
	test_pack();
	test_files();
	return test_done("test_config");
}
