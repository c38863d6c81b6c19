/*
 * Unit tests of the config loader (common/config.c), config_pack/unpack
 * (common/config_pack.c) and the parsers of common/util.c.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

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

/* The antivirus defaults of the built-in actions (on_virus differs). */
static void
check_av_defaults(const struct cfg_antivirus *av, int on_virus)
{
	CHECK(av->enabled == 1);
	CHECK(strcmp(av->database, "/var/lib/clamav") == 0);
	CHECK(av->on_virus == on_virus && av->on_error == ACT_LOCK);
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
	CHECK(cfg->servers[0].connect == SRV_CONNECT_LAZY);
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
	CHECK(cfg->auto_block.duration_ms == 20 * 60 * 1000);
	CHECK(cfg->auto_block.nexceptions == 0);
	/* The default's own action: antivirus on, ClamAV's limits. */
	if (cfg->policies[0].actionidx >= 0) {
		check_av_defaults(
		    &cfg->actions[cfg->policies[0].actionidx].antivirus,
		    ACT_STRIP);
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
	CHECK(cfg->auto_block.duration_ms == 20 * 60 * 1000);
	CHECK(cfg->auto_block.nexceptions == 0 &&
	      cfg->auto_block.exceptions == NULL);
	a = &cfg->actions[0];
	CHECK(a->builtin && a->inherit == NULL);
	CHECK(a->general.max_email_size == 50 * 1024 * 1024);
	CHECK(a->general.oversize == ACT_DENY);
	CHECK(a->general.max_line_length == 64 * 1024);
	CHECK(strstr(a->deny_message, "%(reason)%") != NULL);
	check_av_defaults(&cfg->actions[0].antivirus, ACT_STRIP);
	check_av_defaults(&cfg->actions[1].antivirus, ACT_LOCK);
	/* No policy refers to them: scand loads no engine for them. */
	CHECK(!cfg->actions[0].used && !cfg->actions[1].used);
	config_free(cfg);
}

static int
has_rule(const struct cfg_rules *rs, const char *match, int type, int action)
{
	size_t i;

	for (i = 0; i < rs->nrules; i++)
		if (strcmp(rs->rules[i].match, match) == 0)
			return rs->rules[i].type == type &&
			       rs->rules[i].action == action &&
			       rs->rules[i].name != NULL &&
			       rs->rules[i].name[0] != '\0' &&
			       rs->rules[i].log == 1 && rs->rules[i].alarm == 0;
	return 0;
}

/* What both built-in actions have, and a file action inherits. */
static void
check_builtin_sections(const struct cfg_action *a)
{
	static const char *const types[] = {"application/x-dosexec",
	    "application/x-msdownload", "application/x-msdos-program",
	    "application/vnd.microsoft.portable-executable",
	    "application/x-executable", "application/x-ms-shortcut",
	    "application/hta", "application/x-msi", "application/x-bat",
	    "application/x-sh"};
	static const char *const files[] = {"*.exe", "*.com", "*.scr", "*.pif",
	    "*.bat", "*.cmd", "*.vbs", "*.vbe", "*.js", "*.jse", "*.wsf",
	    "*.wsh", "*.hta", "*.cpl", "*.msi", "*.msp", "*.lnk", "*.ps1",
	    "*.jar", "*.reg"};
	const struct cfg_spam *sp = &a->spamblocker;
	size_t i;

	CHECK(a->general.max_archive_depth == 3);
	CHECK(a->content_types.auto_detect == 1);
	CHECK(a->content_types.archives == 1);
	CHECK(a->content_types.none_matched == ACT_ALLOW);
	CHECK(a->content_types.nrules == sizeof(types) / sizeof(types[0]));
	for (i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		CHECK(has_rule(
		    &a->content_types, types[i], MATCH_EXACT, ACT_STRIP));
	CHECK(!has_rule(&a->content_types, "application/javascript",
	    MATCH_EXACT, ACT_STRIP));
	CHECK(a->filenames.archives == 1);
	CHECK(a->filenames.none_matched == ACT_ALLOW);
	CHECK(a->filenames.nrules == sizeof(files) / sizeof(files[0]));
	for (i = 0; i < sizeof(files) / sizeof(files[0]); i++)
		CHECK(has_rule(
		    &a->filenames, files[i], MATCH_PATTERN, ACT_STRIP));
	CHECK(a->headers.nrules == 0 && a->headers.rules == NULL);
	CHECK(a->headers.none_matched == ACT_ALLOW);
	CHECK(a->apt_blocker.enabled == 1);
	CHECK(strcmp(a->apt_blocker.database, "/etc/imapgw/apt.db") == 0);
	CHECK(a->apt_blocker.actions[APT_HIGH] == ACT_STRIP);
	CHECK(a->apt_blocker.actions[APT_MEDIUM] == ACT_STRIP);
	CHECK(a->apt_blocker.actions[APT_LOW] == ACT_ALLOW);
	CHECK(sp->enabled == 1 && sp->engine == SPAM_ENGINE_BUILTIN);
	CHECK(sp->rules == NULL && sp->rules_data == NULL);
	CHECK(strcmp(sp->address.text, "127.0.0.1:783") == 0);
	CHECK(sp->timeout_ms == 30000 && sp->max_size == 1024 * 1024);
	CHECK(sp->on_unavailable == ACT_ALLOW);
	CHECK(strcmp(sp->header, "X-Spam-Category") == 0);
	CHECK(sp->cat[SPAM_CONFIRMED].action == ACT_TAG);
	CHECK(strcmp(sp->cat[SPAM_CONFIRMED].tag, "***SPAM*** ") == 0);
	CHECK(sp->cat[SPAM_CONFIRMED].score == 15);
	CHECK(sp->cat[SPAM_BULK].action == ACT_TAG);
	CHECK(strcmp(sp->cat[SPAM_BULK].tag, "***BULK*** ") == 0);
	CHECK(sp->cat[SPAM_BULK].score == 10);
	CHECK(sp->cat[SPAM_SUSPECT].action == ACT_HEADER);
	CHECK(sp->cat[SPAM_SUSPECT].tag != NULL);
	CHECK(sp->cat[SPAM_SUSPECT].score == 5);
	CHECK(sp->nexceptions == 0 && sp->exceptions == NULL);
}

static void
test_builtins(void)
{
	struct config *cfg;

	cfg = load_ok("user: _imapgw\n");
	CHECK(cfg != NULL);
	if (cfg == NULL)
		return;
	check_builtin_sections(&cfg->actions[0]);
	check_builtin_sections(&cfg->actions[1]);
	CHECK(cfg->actions[0].antivirus.on_virus == ACT_STRIP);
	CHECK(cfg->actions[1].antivirus.on_virus == ACT_LOCK);
	CHECK(cfg->actions[0].antivirus.on_error == ACT_LOCK);
	CHECK(cfg->actions[1].antivirus.on_error == ACT_LOCK);
	/* Not used: no file was read. */
	CHECK(cfg->actions[0].apt_blocker.data == NULL);
	CHECK(!cfg->actions[0].apt_blocker.missing);
	config_free(cfg);

	/* Cloned by inherit, rules and all, with nothing else set. */
	cfg = load_ok("actions:\n"
	              "  s: {inherit: IMAP-Server.Standard}\n"
	              "  c: {inherit: IMAP-Client.Standard}\n"
	              "  n: {}\n");
	CHECK(cfg != NULL);
	if (cfg == NULL)
		return;
	check_builtin_sections(&cfg->actions[2]);
	check_builtin_sections(&cfg->actions[3]);
	check_builtin_sections(&cfg->actions[4]);
	check_av_defaults(&cfg->actions[2].antivirus, ACT_STRIP);
	check_av_defaults(&cfg->actions[3].antivirus, ACT_LOCK);
	check_av_defaults(&cfg->actions[4].antivirus, ACT_STRIP);
	/* Copies, not shared. */
	CHECK(
	    cfg->actions[2].filenames.rules != cfg->actions[0].filenames.rules);
	CHECK(cfg->actions[2].spamblocker.header !=
	      cfg->actions[0].spamblocker.header);
	config_free(cfg);
}

/* Every key of the proxy-action sections. */
static const char proxy_yaml[] =
    "actions:\n"
    "  p:\n"
    "    inherit: IMAP-Client.Standard\n"
    "    general: { max_email_size: 50M, oversize: deny, "
    "max_line_length: 64K, max_archive_depth: 0 }\n"
    "    content_types:\n"
    "      auto_detect: false\n"
    "      archives: no\n"
    "      none_matched: lock\n"
    "      rules:\n"
    "        - { match: \"application/x-dosexec\", action: strip, "
    "type: pattern, name: \"executables\", alarm: true, log: false }\n"
    "        - { match: \"^image/(png|gif)$\", type: regex, "
    "action: block }\n"
    "        - { match: \"text/html\", type: exact, action: deny }\n"
    "    filenames:\n"
    "      archives: false\n"
    "      none_matched: drop\n"
    "      rules: [ { match: \"*.exe\", action: lock } ]\n"
    "    headers:\n"
    "      none_matched: strip\n"
    "      rules:\n"
    "        - { match: \"X-Mailer: *spam*\", action: strip }\n"
    "        - { match: \"(?i)^subject: .*viagra\", type: regex, "
    "action: block, name: pills }\n"
    "    antivirus: { enabled: true, database: /var/lib/clamav, "
    "on_virus: block, on_error: lock }\n"
    "    apt_blocker:\n"
    "      enabled: false\n"
    "      database: /srv/apt.db\n"
    "      actions: { high: block, medium: lock, low: deny }\n"
    "    spamblocker:\n"
    "      enabled: true\n"
    "      engine: rspamd\n"
    "      rules: /srv/spam.rules\n"
    "      address: \"[::1]:11334\"\n"
    "      timeout: 1500ms\n"
    "      max_size: 2M\n"
    "      on_unavailable: deny\n"
    "      header: X-Gw-Spam\n"
    "      categories:\n"
    "        confirmed: { action: block, tag: \"[SPAM] \", score: 20.5 }\n"
    "        bulk: { action: deny, tag: \"[BULK]\", score: 7 }\n"
    "        suspect: { action: allow, tag: \"[?]\", score: 0 }\n"
    "      exceptions:\n"
    "        - { sender: \"*@example.org\" }\n"
    "        - { recipient: \"postmaster@*\" }\n"
    "        - { sender: \"a@b\", recipient: \"c@d\" }\n"
    "  q:\n"
    "    spamblocker: { engine: spamd, categories: { suspect: "
    "{ action: tag } } }\n"
    "  r:\n"
    "    spamblocker: { engine: rspamd }\n";

static void
test_proxy_keys(void)
{
	const struct cfg_action *a;
	const struct cfg_spam *sp;
	struct config *cfg;

	cfg = load_ok(proxy_yaml);
	CHECK(cfg != NULL);
	if (cfg == NULL)
		return;
	CHECK(cfg->nactions == 5);
	a = &cfg->actions[2];
	CHECK(a->general.max_archive_depth == 0);
	CHECK(a->content_types.auto_detect == 0);
	CHECK(a->content_types.archives == 0);
	CHECK(a->content_types.none_matched == ACT_LOCK);
	CHECK(a->content_types.nrules == 3);
	if (a->content_types.nrules == 3) {
		const struct cfg_rule *r = a->content_types.rules;

		CHECK(strcmp(r[0].match, "application/x-dosexec") == 0);
		CHECK(strcmp(r[0].name, "executables") == 0);
		CHECK(r[0].type == MATCH_PATTERN && r[0].action == ACT_STRIP);
		CHECK(r[0].alarm == 1 && r[0].log == 0);
		CHECK(r[0].pos.line == 10 && r[0].pos.col == 11);
		CHECK(strcmp(r[1].name, "^image/(png|gif)$") == 0);
		CHECK(r[1].type == MATCH_REGEX && r[1].action == ACT_BLOCK);
		CHECK(r[1].alarm == 0 && r[1].log == 1);
		CHECK(r[2].type == MATCH_EXACT && r[2].action == ACT_DENY);
	}
	CHECK(a->filenames.archives == 0);
	CHECK(a->filenames.none_matched == ACT_DROP);
	CHECK(a->filenames.nrules == 1);
	CHECK(a->filenames.nrules == 1 &&
	      strcmp(a->filenames.rules[0].match, "*.exe") == 0 &&
	      a->filenames.rules[0].action == ACT_LOCK);
	CHECK(a->headers.none_matched == ACT_STRIP);
	CHECK(a->headers.nrules == 2);
	CHECK(a->headers.nrules == 2 &&
	      strcmp(a->headers.rules[1].name, "pills") == 0 &&
	      a->headers.rules[1].type == MATCH_REGEX);
	CHECK(a->antivirus.on_virus == ACT_BLOCK);
	CHECK(a->antivirus.on_error == ACT_LOCK);
	CHECK(a->apt_blocker.enabled == 0);
	CHECK(strcmp(a->apt_blocker.database, "/srv/apt.db") == 0);
	CHECK(a->apt_blocker.actions[APT_HIGH] == ACT_BLOCK);
	CHECK(a->apt_blocker.actions[APT_MEDIUM] == ACT_LOCK);
	CHECK(a->apt_blocker.actions[APT_LOW] == ACT_DENY);
	sp = &a->spamblocker;
	CHECK(sp->enabled == 1 && sp->engine == SPAM_ENGINE_RSPAMD);
	CHECK(strcmp(sp->rules, "/srv/spam.rules") == 0);
	/* Not a used action, and not the builtin engine: not read. */
	CHECK(sp->rules_data == NULL);
	CHECK(strcmp(sp->address.text, "[::1]:11334") == 0);
	CHECK(sp->address.ss.ss_family == AF_INET6);
	CHECK(sp->timeout_ms == 1500 && sp->max_size == 2 * 1024 * 1024);
	CHECK(sp->on_unavailable == ACT_DENY);
	CHECK(strcmp(sp->header, "X-Gw-Spam") == 0);
	CHECK(sp->cat[SPAM_CONFIRMED].action == ACT_BLOCK);
	CHECK(strcmp(sp->cat[SPAM_CONFIRMED].tag, "[SPAM] ") == 0);
	CHECK(sp->cat[SPAM_CONFIRMED].score == 20.5);
	CHECK(sp->cat[SPAM_BULK].action == ACT_DENY);
	CHECK(strcmp(sp->cat[SPAM_BULK].tag, "[BULK]") == 0);
	CHECK(sp->cat[SPAM_BULK].score == 7);
	CHECK(sp->cat[SPAM_SUSPECT].action == ACT_ALLOW);
	CHECK(sp->cat[SPAM_SUSPECT].score == 0);
	CHECK(sp->nexceptions == 3);
	if (sp->nexceptions == 3) {
		CHECK(strcmp(sp->exceptions[0].sender, "*@example.org") == 0);
		CHECK(sp->exceptions[0].recipient == NULL);
		CHECK(sp->exceptions[1].sender == NULL);
		CHECK(strcmp(sp->exceptions[1].recipient, "postmaster@*") == 0);
		CHECK(strcmp(sp->exceptions[2].sender, "a@b") == 0);
		CHECK(strcmp(sp->exceptions[2].recipient, "c@d") == 0);
		CHECK(sp->exceptions[2].pos.line == 43);
	}
	/* The engine's default address; other keys inherited. */
	sp = &cfg->actions[3].spamblocker;
	CHECK(sp->engine == SPAM_ENGINE_SPAMD);
	CHECK(strcmp(sp->address.text, "127.0.0.1:783") == 0);
	CHECK(sp->cat[SPAM_SUSPECT].action == ACT_TAG);
	CHECK(sp->cat[SPAM_SUSPECT].score == 5);
	CHECK(strcmp(sp->cat[SPAM_CONFIRMED].tag, "***SPAM*** ") == 0);
	sp = &cfg->actions[4].spamblocker;
	CHECK(strcmp(sp->address.text, "127.0.0.1:11333") == 0);
	config_free(cfg);
}

/* A key set overrides that key only; a rules list replaces the list. */
static const char inherit_yaml[] =
    "actions:\n"
    "  base:\n"
    "    general: { max_archive_depth: 5 }\n"
    "    content_types:\n"
    "      none_matched: strip\n"
    "      rules: [ { match: \"a/b\", action: deny }, "
    "{ match: \"c/d\", action: lock } ]\n"
    "    headers: { rules: [ { match: \"X-A: *\", action: strip } ] }\n"
    "    apt_blocker: { database: /srv/apt.db, actions: { low: lock } }\n"
    "    spamblocker:\n"
    "      engine: spamd\n"
    "      address: \"10.0.0.1:7830\"\n"
    "      categories: { bulk: { tag: \"B \" } }\n"
    "      exceptions: [ { sender: \"*@a\" }, { sender: \"*@b\" } ]\n"
    "  child:\n"
    "    inherit: base\n"
    "    general: { oversize: allow }\n"
    "    content_types:\n"
    "      auto_detect: false\n"
    "      rules: [ { match: \"e/f\", action: allow } ]\n"
    "    filenames: { rules: [] }\n"
    "    apt_blocker: { actions: { high: deny } }\n"
    "    spamblocker:\n"
    "      engine: rspamd\n"
    "      categories: { bulk: { score: 8 } }\n"
    "  grandchild:\n"
    "    inherit: child\n"
    "    headers: { none_matched: deny }\n"
    "    spamblocker: { exceptions: [] }\n";

static void
test_inherit_sections(void)
{
	const struct cfg_action *b, *c, *g;
	struct config *cfg;

	cfg = load_ok(inherit_yaml);
	CHECK(cfg != NULL);
	if (cfg == NULL)
		return;
	b = &cfg->actions[2];
	c = &cfg->actions[3];
	g = &cfg->actions[4];
	/* base: only what it sets differs from IMAP-Server.Standard. */
	CHECK(b->general.max_archive_depth == 5);
	CHECK(b->general.max_email_size == 50 * 1024 * 1024);
	CHECK(b->content_types.none_matched == ACT_STRIP);
	CHECK(b->content_types.auto_detect == 1);
	CHECK(b->content_types.nrules == 2);
	CHECK(b->filenames.nrules == 20);
	CHECK(b->headers.nrules == 1);
	CHECK(strcmp(b->apt_blocker.database, "/srv/apt.db") == 0);
	CHECK(b->apt_blocker.actions[APT_HIGH] == ACT_STRIP);
	CHECK(b->apt_blocker.actions[APT_LOW] == ACT_LOCK);
	CHECK(strcmp(b->spamblocker.address.text, "10.0.0.1:7830") == 0);
	CHECK(strcmp(b->spamblocker.cat[SPAM_BULK].tag, "B ") == 0);
	CHECK(b->spamblocker.cat[SPAM_BULK].action == ACT_TAG);
	CHECK(b->spamblocker.nexceptions == 2);
	/* child: a new rules list, the other keys of the section kept. */
	CHECK(c->general.max_archive_depth == 5);
	CHECK(c->general.oversize == ACT_ALLOW);
	CHECK(c->content_types.auto_detect == 0);
	CHECK(c->content_types.none_matched == ACT_STRIP);
	CHECK(c->content_types.nrules == 1);
	CHECK(c->content_types.nrules == 1 &&
	      strcmp(c->content_types.rules[0].match, "e/f") == 0);
	CHECK(c->filenames.nrules == 0 && c->filenames.rules == NULL);
	CHECK(c->headers.nrules == 1 &&
	      strcmp(c->headers.rules[0].match, "X-A: *") == 0);
	CHECK(strcmp(c->apt_blocker.database, "/srv/apt.db") == 0);
	CHECK(c->apt_blocker.actions[APT_HIGH] == ACT_DENY);
	CHECK(c->apt_blocker.actions[APT_MEDIUM] == ACT_STRIP);
	CHECK(c->apt_blocker.actions[APT_LOW] == ACT_LOCK);
	/* An address given above is kept when the engine changes. */
	CHECK(c->spamblocker.engine == SPAM_ENGINE_RSPAMD);
	CHECK(strcmp(c->spamblocker.address.text, "10.0.0.1:7830") == 0);
	CHECK(strcmp(c->spamblocker.cat[SPAM_BULK].tag, "B ") == 0);
	CHECK(c->spamblocker.cat[SPAM_BULK].score == 8);
	CHECK(c->spamblocker.nexceptions == 2);
	CHECK(c->spamblocker.nexceptions == 2 &&
	      strcmp(c->spamblocker.exceptions[1].sender, "*@b") == 0);
	/* grandchild: two levels, an empty list replaces too. */
	CHECK(
	    g->content_types.nrules == 1 && g->content_types.auto_detect == 0);
	CHECK(g->headers.none_matched == ACT_DENY && g->headers.nrules == 1);
	CHECK(g->apt_blocker.actions[APT_HIGH] == ACT_DENY);
	CHECK(g->spamblocker.cat[SPAM_BULK].score == 8);
	CHECK(g->spamblocker.nexceptions == 0);
	CHECK(g->spamblocker.exceptions == NULL);
	config_free(cfg);

	/* Scores: a child that sets none inherits an error, not again. */
	CHECK(expect_errors("actions:\n"
	                    "  p: {spamblocker: {categories: {bulk: "
	                    "{score: 20}}}}\n"
	                    "  q: {inherit: p}\n"
	                    "  r: {inherit: p, spamblocker: {categories: "
	                    "{confirmed: {score: 25}}}}\n"
	                    "  s: {inherit: p, spamblocker: {categories: "
	                    "{suspect: {score: 1}}}}\n",
	    "t.yaml:2:48: action 'p': spamblocker scores must be confirmed "
	    ">= bulk >= suspect (they are 15, 20 and 5)\n"
	    "t.yaml:5:63: action 's': spamblocker scores must be confirmed "
	    ">= bulk >= suspect (they are 15, 20 and 1)\n"));
	cfg = load_ok("actions:\n"
	              "  p: {spamblocker: {categories: {bulk: {score: 15}, "
	              "suspect: {score: 15}}}}\n"
	              "  q: {inherit: p, spamblocker: {categories: "
	              "{confirmed: {score: 1e2}}}}\n");
	CHECK(cfg != NULL);
	if (cfg != NULL)
		CHECK(cfg->actions[3].spamblocker.cat[SPAM_CONFIRMED].score ==
		      100);
	config_free(cfg);
}

/* At most CONFIG_MAX_ITEMS rules (and exceptions) in a list. */
static void
test_rule_limit(void)
{
	struct config *cfg;
	struct buf t;
	int i;

	buf_init(&t, 0);
	buf_printf(&t, "actions:\n  a:\n    filenames:\n      rules:\n");
	for (i = 0; i < CONFIG_MAX_ITEMS; i++)
		buf_printf(
		    &t, "        - {match: \"*.x%d\", action: strip}\n", i);
	buf_add_u8(&t, 0);
	cfg = load_ok((char *)t.data);
	CHECK(cfg != NULL &&
	      cfg->actions[2].filenames.nrules == CONFIG_MAX_ITEMS);
	config_free(cfg);
	t.len--;
	buf_printf(&t, "        - {match: \"*.y\", action: strip}\n");
	buf_add_u8(&t, 0);
	CHECK(expect_errors((char *)t.data,
	    "t.yaml:5:9: too many rules in filenames of action 'a' (at most "
	    "1024)\n"));

	buf_reset(&t);
	buf_printf(&t, "actions:\n  a:\n    spamblocker:\n      exceptions:\n");
	for (i = 0; i < CONFIG_MAX_ITEMS + 1; i++)
		buf_printf(&t, "        - {sender: \"*@x%d\"}\n", i);
	buf_add_u8(&t, 0);
	CHECK(expect_errors((char *)t.data,
	    "t.yaml:5:9: too many exceptions in spamblocker of action 'a' (at "
	    "most 1024)\n"));
	buf_free(&t);
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
    "    connect: eager\n"
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
	/* lazy unless the pool says eager */
	CHECK(s->connect == SRV_CONNECT_LAZY &&
	      cfg->servers[1].connect == SRV_CONNECT_EAGER);
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
	check_av_defaults(&cfg->actions[1].antivirus, ACT_LOCK);
	/* Policy one uses the default action, two uses child. */
	CHECK(cfg->actions[0].used && !cfg->actions[1].used);

	CHECK(cfg->npolicies == 2);
	p = &cfg->policies[0];
	CHECK(p->server == 1 && p->actionidx == 0);
	CHECK(strcmp(p->action, "IMAP-Server.Standard") == 0);
	CHECK(p->nlisten == 1 && p->listen[0].tls == LISTEN_TLS_NONE);
	CHECK(p->nfrom == 1 && p->from[0].family == AF_UNSPEC);
	CHECK(p->pos.line == 41 && p->pos.col == 5);
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
    /* TLS: an implicit listener needs a certificate of its policy. */
    {"servers:\n"
     "  s:\n"
     "    tls: starttls\n"
     "    send_id: maybe\n"
     "    connect: later\n"
     "    members: [\"10.0.0.1:143\"]\n"
     "policies:\n"
     "  - name: p\n"
     "    listen: { address: \"127.0.0.1:1993\", tls: implicit }\n"
     "    to: s\n",
        "t.yaml:4:14: 'send_id' must be true or false\n"
        "t.yaml:5:14: connect must be eager or lazy\n"
        "t.yaml:9:24: policy 'p': the implicit TLS listener "
        "127.0.0.1:1993 needs a certificate (tls: { certificate: NAME "
        "})\n"},
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
     "    apt_blockers: {enabled: true}\n",
        "t.yaml:4:23: bad size '10Q' (use a number with K, M or G)\n"
        "t.yaml:5:17: oversize must be allow, deny or drop\n"
        "t.yaml:6:24: max_line_length must be between 1K and 16M\n"
        "t.yaml:7:7: unknown key 'scan_limit' in general of action 'a'\n"
        "t.yaml:9:5: unknown key 'apt_blockers' in action 'a'\n"},
    {"actions:\n"
     "  a:\n"
     "    antivirus:\n"
     "      enabled: maybe\n"
     "      database: var/lib/clamav\n"
     "      on_virus: tag\n"
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
        "t.yaml:6:17: on_virus must be allow, strip, lock, deny, drop or "
        "block\n"
        "t.yaml:7:17: on_error must be allow, lock, deny or drop\n"
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
     "    tls: {mode: enabled, certificate: nocert, profile: noprof}\n",
        "t.yaml:5:9: policy 'p': no server pool named 'nopool'\n"
        "t.yaml:6:13: policy 'p': no action named 'noaction'\n"
        "t.yaml:7:39: policy 'p': no certificate named 'nocert'\n"
        "t.yaml:7:56: policy 'p': no tls_profile named 'noprof'\n"},
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
    /* content_types, filenames, headers and their rules. */
    {"actions:\n"
     "  a:\n"
     "    content_types:\n"
     "      auto_detect: maybe\n"
     "      archives: 1\n"
     "      none_matched: tag\n"
     "      rules:\n"
     "        - { match: \"\", action: strip }\n"
     "        - { action: strip }\n"
     "        - { match: x, action: header, type: glob, alarm: 2, foo: 1 }\n"
     "        - { match: \"(ab\", type: regex, action: strip }\n"
     "        - 5\n"
     "        - { match: \"[z-a]\", action: strip, type: regex }\n"
     "      extra: 1\n"
     "    filenames: { auto_detect: true, none_matched: lock, rules: "
     "{ match: x } }\n"
     "    headers: { archives: true, none_matched: lock, rules: "
     "[ { match: \"X-A: *\", action: lock, log: [] } ] }\n"
     "  b: { content_types: [], filenames: 1, headers: { rules: "
     "[ { name: \"\", match: x, action: strip, type: [regex] } ] } }\n",
        "t.yaml:4:20: 'auto_detect' must be true or false\n"
        "t.yaml:5:17: 'archives' must be true or false\n"
        "t.yaml:6:21: none_matched must be allow, strip, lock, deny, drop "
        "or block\n"
        "t.yaml:8:20: 'match' must not be empty\n"
        "t.yaml:9:11: missing required key 'match' in rule 2 of "
        "content_types of action 'a'\n"
        "t.yaml:10:31: action must be allow, strip, lock, deny, drop or "
        "block\n"
        "t.yaml:10:45: type must be pattern, exact or regex\n"
        "t.yaml:10:58: 'alarm' must be true or false\n"
        "t.yaml:10:61: unknown key 'foo' in rule 3 of content_types of "
        "action 'a'\n"
        "t.yaml:11:20: bad regular expression: missing closing "
        "parenthesis at offset 3\n"
        "t.yaml:12:11: a rule must be a mapping\n"
        "t.yaml:13:20: bad regular expression: range out of order in "
        "character class at offset 3\n"
        "t.yaml:14:7: unknown key 'extra' in content_types of action "
        "'a'\n"
        "t.yaml:15:18: unknown key 'auto_detect' in filenames of action "
        "'a'\n"
        "t.yaml:15:64: 'rules' must be a sequence\n"
        "t.yaml:16:16: unknown key 'archives' in headers of action 'a'\n"
        "t.yaml:16:46: none_matched must be allow, strip, deny, drop or "
        "block\n"
        "t.yaml:16:88: action must be allow, strip, deny, drop or block\n"
        "t.yaml:16:99: 'log' must be true or false\n"
        "t.yaml:17:23: 'content_types' must be a mapping\n"
        "t.yaml:17:38: 'filenames' must be a mapping\n"
        "t.yaml:17:69: 'name' must not be empty\n"
        "t.yaml:17:104: 'type' must be a string\n"},
    /* scand compiles regexes without \C (it could split UTF-8). */
    {"actions:\n  a: {headers: {rules: [{match: 'x\\C', type: regex, "
     "action: strip}]}}\n",
        "t.yaml:2:33: bad regular expression: using \\C is disabled by "
        "the application at offset 3\n"},
    {"actions:\n  a: {general: {max_archive_depth: 17}}\n"
     "  b: {general: {max_archive_depth: -1}}\n",
        "t.yaml:2:36: 'max_archive_depth' must be an integer from 0 to "
        "16\n"
        "t.yaml:3:36: 'max_archive_depth' must be an integer from 0 to "
        "16\n"},
    /* apt_blocker. */
    {"actions:\n"
     "  a:\n"
     "    apt_blocker:\n"
     "      enabled: 1\n"
     "      database: apt.db\n"
     "      actions: { high: tag, medium: header, low: quarantine, "
     "none: allow }\n"
     "      extra: x\n"
     "  b: { apt_blocker: { actions: [strip], database: \"\" } }\n"
     "  c: { apt_blocker: 5 }\n",
        "t.yaml:4:16: 'enabled' must be true or false\n"
        "t.yaml:5:17: 'database' must be an absolute path\n"
        "t.yaml:6:24: high must be allow, strip, lock, deny, drop or "
        "block\n"
        "t.yaml:6:37: medium must be allow, strip, lock, deny, drop or "
        "block\n"
        "t.yaml:6:50: low must be allow, strip, lock, deny, drop or "
        "block\n"
        "t.yaml:6:62: unknown key 'none' in actions of apt_blocker of "
        "action 'a'\n"
        "t.yaml:7:7: unknown key 'extra' in apt_blocker of action 'a'\n"
        "t.yaml:8:32: 'actions' must be a mapping\n"
        "t.yaml:8:51: 'database' must not be empty\n"
        "t.yaml:9:21: 'apt_blocker' must be a mapping\n"},
    /* spamblocker. */
    {"actions:\n"
     "  a:\n"
     "    spamblocker:\n"
     "      enabled: yes please\n"
     "      engine: spamassassin\n"
     "      rules: spam.rules\n"
     "      address: \"localhost:783\"\n"
     "      timeout: 2h\n"
     "      max_size: 100\n"
     "      on_unavailable: strip\n"
     "      header: \"X Spam\"\n"
     "      categories:\n"
     "        confirmed: { action: strip, tag: \"a\\nb\", score: -1 }\n"
     "        bulk: { action: lock, tag: \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\", score: nan }\n"
     "        suspect: { score: 1e400, color: red, tag: \"\" }\n"
     "        ham: { action: allow }\n"
     "      exceptions:\n"
     "        - { sender: \"\" }\n"
     "        - {}\n"
     "        - { recipient: x, cc: y }\n"
     "        - [ x ]\n"
     "        -\n"
     "      extra: 1\n"
     "  b: { spamblocker: { header: \"X-Spam:Cat\", timeout: 0s, "
     "categories: { bulk: { score: 0x10 } } } }\n"
     "  c: { spamblocker: { header: \"X-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\", exceptions: "
     "{ sender: x }, categories: [] } }\n"
     "  d: { spamblocker: { address: \"127.0.0.1:0\", max_size: 4001M, "
     "categories: { suspect: { score: [1] } } } }\n",
        "t.yaml:4:16: 'enabled' must be true or false\n"
        "t.yaml:5:15: engine must be builtin, spamd or rspamd\n"
        "t.yaml:6:14: 'rules' must be an absolute path\n"
        "t.yaml:7:16: bad address 'localhost:783' (use a.b.c.d:port or "
        "[ipv6]:port)\n"
        "t.yaml:8:16: timeout must be between 1ms and 1h\n"
        "t.yaml:9:17: max_size must be between 1K and 4000M\n"
        "t.yaml:10:23: on_unavailable must be allow or deny\n"
        "t.yaml:11:15: 'header' must be a header field name (at most 76 "
        "printable ASCII characters, no space or colon)\n"
        "t.yaml:13:30: action must be allow, tag, header, deny, drop or "
        "block\n"
        "t.yaml:13:42: 'tag' must not contain a line break\n"
        "t.yaml:13:57: 'score' must be a number, at least 0\n"
        "t.yaml:14:25: action must be allow, tag, header, deny, drop or "
        "block\n"
        "t.yaml:14:36: 'tag' is too long (at most 128 bytes)\n"
        "t.yaml:14:176: 'score' must be a number, at least 0\n"
        "t.yaml:15:27: 'score' must be a number, at least 0\n"
        "t.yaml:15:34: unknown key 'color' in category suspect of "
        "spamblocker of action 'a'\n"
        "t.yaml:15:51: 'tag' must not be empty\n"
        "t.yaml:16:9: unknown key 'ham' in categories of spamblocker of "
        "action 'a'\n"
        "t.yaml:18:21: 'sender' must not be empty\n"
        "t.yaml:19:11: exception 2 of spamblocker of action 'a' needs a "
        "sender or a recipient\n"
        "t.yaml:20:27: unknown key 'cc' in exception 3 of spamblocker of "
        "action 'a'\n"
        "t.yaml:21:11: an exception must be a mapping\n"
        "t.yaml:22:10: exception 5 of spamblocker of action 'a' needs a "
        "sender or a recipient\n"
        "t.yaml:23:7: unknown key 'extra' in spamblocker of action 'a'\n"
        "t.yaml:24:31: 'header' must be a header field name (at most 76 "
        "printable ASCII characters, no space or colon)\n"
        "t.yaml:24:54: timeout must be between 1ms and 1h\n"
        "t.yaml:24:87: 'score' must be a number, at least 0\n"
        "t.yaml:25:31: 'header' must be a header field name (at most 76 "
        "printable ASCII characters, no space or colon)\n"
        "t.yaml:25:124: 'exceptions' must be a sequence\n"
        "t.yaml:25:151: 'categories' must be a mapping\n"
        "t.yaml:26:32: bad address '127.0.0.1:0' (use a.b.c.d:port or "
        "[ipv6]:port)\n"
        "t.yaml:26:57: max_size must be between 1K and 4000M\n"
        "t.yaml:26:96: 'score' must be a number, at least 0\n"},
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
		CHECK(strcmp(a->servers[i].tls_profile,
		          b->servers[i].tls_profile) == 0);
		CHECK((a->servers[i].server_name == NULL) ==
		      (b->servers[i].server_name == NULL));
		if (a->servers[i].server_name && b->servers[i].server_name)
			CHECK(strcmp(a->servers[i].server_name,
			          b->servers[i].server_name) == 0);
		/* Profile indices: tlsd's only. */
		CHECK(b->role == ROLE_TLSD
		          ? a->servers[i].profileidx == b->servers[i].profileidx
		          : b->servers[i].profileidx == -1);
		CHECK(a->servers[i].connect_timeout_ms ==
		      b->servers[i].connect_timeout_ms);
		CHECK(a->servers[i].send_id == b->servers[i].send_id);
		CHECK(a->servers[i].connect == b->servers[i].connect);
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

/* A policy's tls, names for all, indices for tlsd only. */
static void
check_policy_tls(
    const struct cfg_policy *x, const struct cfg_policy *y, int tlsd)
{
	size_t j;

	CHECK(x->tls.mode == y->tls.mode);
	CHECK(x->tls.ncerts == y->tls.ncerts);
	for (j = 0; j < x->tls.ncerts && j < y->tls.ncerts; j++) {
		CHECK(strcmp(x->tls.certs[j], y->tls.certs[j]) == 0);
		CHECK(tlsd ? x->tls.certidx[j] == y->tls.certidx[j]
		           : y->tls.certidx[j] == -1);
	}
	CHECK(strcmp(x->tls.profile, y->tls.profile) == 0);
	CHECK(tlsd ? x->tls.profileidx == y->tls.profileidx
	           : y->tls.profileidx == -1);
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
		check_policy_tls(x, y, 0);
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

static void
check_rules(const struct cfg_rules *x, const struct cfg_rules *y)
{
	size_t i;

	CHECK(x->auto_detect == y->auto_detect);
	CHECK(x->archives == y->archives);
	CHECK(x->none_matched == y->none_matched);
	CHECK(x->nrules == y->nrules);
	for (i = 0; i < x->nrules && i < y->nrules; i++) {
		CHECK(strcmp(x->rules[i].name, y->rules[i].name) == 0);
		CHECK(strcmp(x->rules[i].match, y->rules[i].match) == 0);
		CHECK(x->rules[i].type == y->rules[i].type);
		CHECK(x->rules[i].action == y->rules[i].action);
		CHECK(x->rules[i].alarm == y->rules[i].alarm);
		CHECK(x->rules[i].log == y->rules[i].log);
		CHECK(x->rules[i].pos.line == y->rules[i].pos.line &&
		      x->rules[i].pos.col == y->rules[i].pos.col);
	}
}

static int
same_blob(const uint8_t *x, size_t xlen, const uint8_t *y, size_t ylen)
{
	if (x == NULL || y == NULL)
		return x == y && xlen == 0 && ylen == 0;
	return xlen == ylen && memcmp(x, y, xlen) == 0 && y[ylen] == '\0';
}

static int
same_opt(const char *x, const char *y)
{
	if (x == NULL || y == NULL)
		return x == y;
	return strcmp(x, y) == 0;
}

static void
check_spam(const struct cfg_spam *x, const struct cfg_spam *y)
{
	size_t i;

	CHECK(x->enabled == y->enabled && x->engine == y->engine);
	CHECK(same_opt(x->rules, y->rules));
	CHECK(same_blob(
	    x->rules_data, x->rules_len, y->rules_data, y->rules_len));
	CHECK(same_addr(&x->address, &y->address));
	CHECK(memcmp(&x->address.ss, &y->address.ss, x->address.len) == 0);
	CHECK(x->timeout_ms == y->timeout_ms && x->max_size == y->max_size);
	CHECK(x->on_unavailable == y->on_unavailable);
	CHECK(strcmp(x->header, y->header) == 0);
	for (i = 0; i < SPAM_NCAT; i++) {
		CHECK(x->cat[i].action == y->cat[i].action);
		CHECK(strcmp(x->cat[i].tag, y->cat[i].tag) == 0);
		CHECK(x->cat[i].score == y->cat[i].score);
	}
	CHECK(x->nexceptions == y->nexceptions);
	for (i = 0; i < x->nexceptions && i < y->nexceptions; i++) {
		CHECK(
		    same_opt(x->exceptions[i].sender, y->exceptions[i].sender));
		CHECK(same_opt(
		    x->exceptions[i].recipient, y->exceptions[i].recipient));
		CHECK(x->exceptions[i].pos.line == y->exceptions[i].pos.line);
	}
}

/* scand gets every field of the proxy-action sections, files included. */
static void
check_scand_actions(const struct config *a, const struct config *b)
{
	const struct cfg_action *x, *y;
	size_t i;

	for (i = 0; i < a->nactions && i < b->nactions; i++) {
		x = &a->actions[i];
		y = &b->actions[i];
		check_rules(&x->content_types, &y->content_types);
		check_rules(&x->filenames, &y->filenames);
		check_rules(&x->headers, &y->headers);
		CHECK(x->apt_blocker.enabled == y->apt_blocker.enabled);
		CHECK(strcmp(x->apt_blocker.database,
		          y->apt_blocker.database) == 0);
		CHECK(memcmp(x->apt_blocker.actions, y->apt_blocker.actions,
		          sizeof(x->apt_blocker.actions)) == 0);
		CHECK(x->apt_blocker.missing == y->apt_blocker.missing);
		CHECK(same_blob(x->apt_blocker.data, x->apt_blocker.len,
		    y->apt_blocker.data, y->apt_blocker.len));
		check_spam(&x->spamblocker, &y->spamblocker);
	}
}

/* netd gets what it had: nothing of the sections it does not use. */
static void
check_netd_actions(const struct config *b)
{
	const struct cfg_action *y;
	size_t i;

	for (i = 0; i < b->nactions; i++) {
		y = &b->actions[i];
		CHECK(y->content_types.rules == NULL &&
		      y->filenames.rules == NULL && y->headers.rules == NULL);
		CHECK(y->apt_blocker.database == NULL &&
		      y->apt_blocker.data == NULL);
		CHECK(y->spamblocker.header == NULL &&
		      y->spamblocker.rules_data == NULL &&
		      y->spamblocker.exceptions == NULL);
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

/* tlsd: profiles, certificates (with their bytes), policies' tls. */
static void
check_tlsd(const struct config *a, const struct config *b)
{
	const struct cfg_tls_profile *x, *y;
	const struct cfg_cert *c, *d;
	size_t i;

	CHECK(a->nprofiles == b->nprofiles && b->nprofiles >= 1);
	for (i = 0; i < a->nprofiles && i < b->nprofiles; i++) {
		x = &a->profiles[i];
		y = &b->profiles[i];
		CHECK(strcmp(x->name, y->name) == 0);
		CHECK(x->min_version == y->min_version);
		CHECK(!x->ciphers == !y->ciphers);
		CHECK(!x->ciphers || strcmp(x->ciphers, y->ciphers) == 0);
		CHECK(!x->ciphersuites == !y->ciphersuites);
		CHECK(!x->ciphersuites ||
		      strcmp(x->ciphersuites, y->ciphersuites) == 0);
		CHECK(x->compliant_only == y->compliant_only);
		CHECK(x->verify_peer == y->verify_peer);
		CHECK(!x->ca_file == !y->ca_file);
		CHECK(x->ca_len == y->ca_len && !x->ca_pem == !y->ca_pem);
		CHECK(
		    !x->ca_pem || memcmp(x->ca_pem, y->ca_pem, x->ca_len) == 0);
		CHECK(x->session_cache == y->session_cache);
		CHECK(x->session_timeout_ms == y->session_timeout_ms);
	}
	CHECK(a->ncerts == b->ncerts);
	for (i = 0; i < a->ncerts && i < b->ncerts; i++) {
		c = &a->certs[i];
		d = &b->certs[i];
		CHECK(strcmp(c->name, d->name) == 0);
		CHECK(strcmp(c->cert, d->cert) == 0);
		CHECK(strcmp(c->key, d->key) == 0);
		CHECK(!c->ocsp == !d->ocsp);
		/* The bytes: tlsd has them, whoever packed. */
		CHECK(d->cert_pem != NULL && d->key_pem != NULL);
		CHECK(!d->ocsp_der == !d->ocsp);
	}
	CHECK(a->npolicies == b->npolicies);
	for (i = 0; i < a->npolicies && i < b->npolicies; i++) {
		CHECK(strcmp(a->policies[i].name, b->policies[i].name) == 0);
		check_policy_tls(&a->policies[i], &b->policies[i], 1);
		CHECK(b->policies[i].nlisten == 0 && b->policies[i].to == NULL);
	}
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
		CHECK(u->control_socket == NULL);
		/* scand gets state_dir for its lock key, netd for the
		 * verdict cache (with its size). */
		if (role == ROLE_SCAND || role == ROLE_NETD)
			CHECK(u->state_dir != NULL &&
			      strcmp(u->state_dir, cfg->state_dir) == 0);
		else
			CHECK(u->state_dir == NULL);
		CHECK(u->vcache_size ==
		      (role == ROLE_NETD ? cfg->vcache_size : 0));
		if (role == ROLE_NETD) {
			check_servers(cfg, u);
			check_actions(cfg, u);
			check_netd_actions(u);
			check_policies(cfg, u);
		} else if (role == ROLE_SCAND) {
			CHECK(u->nservers == 0 && u->npolicies == 0);
			check_actions(cfg, u);
			check_scand_actions(cfg, u);
		} else {
			/* tlsd: servers, policies (name and tls). */
			CHECK(u->nactions == 0);
			check_servers(cfg, u);
			check_tlsd(cfg, u);
		}
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

/* Pack and unpack once, and compare. */
static void
pack_roundtrip(const struct config *cfg, enum imapgw_role role)
{
	struct config *u;
	struct buf b;

	buf_init(&b, 0);
	CHECK(config_pack(cfg, role, &b) == 0);
	u = config_unpack(b.data, b.len);
	CHECK(u != NULL);
	if (u != NULL) {
		check_actions(cfg, u);
		if (role == ROLE_SCAND)
			check_scand_actions(cfg, u);
		else
			check_netd_actions(u);
	}
	config_free(u);
	buf_free(&b);
}

/* general.consistency and verdict_cache. */
static void
test_consistency(void)
{
	static const struct {
		const char *text;
		uint64_t size;
	} sizes[] = {
	    {"verdict_cache: { size: 0 }\n", 0},
	    {"verdict_cache: { size: 1M }\n", 1024 * 1024},
	    {"verdict_cache: { size: 1024K }\n", 1024 * 1024},
	    {"verdict_cache: { size: 512M }\n", 512 * 1024 * 1024},
	    {"verdict_cache: { size: 64G }\n", 64ULL << 30},
	    {"verdict_cache:\n", 256 * 1024 * 1024},
	    {"verdict_cache: {}\n", 256 * 1024 * 1024},
	};
	struct config *cfg, *u;
	struct buf b;
	size_t i;

	/* Defaults: strict everywhere, a 256M map. */
	cfg = load_ok("user: _imapgw\n");
	CHECK(cfg != NULL);
	if (cfg == NULL)
		return;
	CHECK(cfg->vcache_size == 256 * 1024 * 1024);
	for (i = 0; i < cfg->nactions; i++)
		CHECK(cfg->actions[i].general.consistency == CONSIST_STRICT);
	config_free(cfg);

	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		cfg = load_ok(sizes[i].text);
		CHECK(cfg != NULL && cfg->vcache_size == sizes[i].size);
		config_free(cfg);
	}

	/* Inherited key by key; packed for netd and scand. */
	cfg = load_ok("verdict_cache: { size: 2G }\n"
	              "actions:\n"
	              "  a: { general: { consistency: lazy } }\n"
	              "  b: { inherit: a, general: { max_archive_depth: 2 } }\n"
	              "  c: { inherit: b, general: { consistency: strict } }\n"
	              "  d: { inherit: IMAP-Client.Standard }\n");
	CHECK(cfg != NULL);
	if (cfg == NULL)
		return;
	CHECK(cfg->actions[2].general.consistency == CONSIST_LAZY);
	CHECK(cfg->actions[3].general.consistency == CONSIST_LAZY);
	CHECK(cfg->actions[3].general.max_archive_depth == 2);
	CHECK(cfg->actions[4].general.consistency == CONSIST_STRICT);
	CHECK(cfg->actions[5].general.consistency == CONSIST_STRICT);
	buf_init(&b, 0);
	CHECK(config_pack(cfg, ROLE_NETD, &b) == 0);
	u = config_unpack(b.data, b.len);
	CHECK(u != NULL && u->vcache_size == 2ULL << 30 && u->nactions == 6 &&
	      u->actions[2].general.consistency == CONSIST_LAZY &&
	      u->actions[4].general.consistency == CONSIST_STRICT);
	config_free(u);
	buf_free(&b);
	buf_init(&b, 0);
	CHECK(config_pack(cfg, ROLE_SCAND, &b) == 0);
	u = config_unpack(b.data, b.len);
	CHECK(u != NULL && u->vcache_size == 0 &&
	      u->actions[3].general.consistency == CONSIST_LAZY);
	config_free(u);
	buf_free(&b);
	/* Unpack refuses a size out of bounds. */
	cfg->vcache_size = 512 * 1024;
	buf_init(&b, 0);
	CHECK(config_pack(cfg, ROLE_NETD, &b) == 0);
	CHECK(config_unpack(b.data, b.len) == NULL);
	buf_free(&b);
	config_free(cfg);

	CHECK(expect_errors("actions:\n"
	                    "  a: { general: { consistency: eager } }\n"
	                    "  b: { general: { consistency: [ lazy ] } }\n",
	    "t.yaml:2:32: consistency must be strict or lazy\n"
	    "t.yaml:3:32: 'consistency' must be a string\n"));
	CHECK(expect_errors("verdict_cache: { size: 1K }\n",
	    "t.yaml:1:24: size must be 0 or from 1M to 64G\n"));
	CHECK(expect_errors("verdict_cache: { size: 65G }\n",
	    "t.yaml:1:24: size must be 0 or from 1M to 64G\n"));
	CHECK(expect_errors("verdict_cache: { size: lots }\n",
	    "t.yaml:1:24: bad size 'lots' (use a number with K, M or G)\n"));
	CHECK(expect_errors("verdict_cache: 256M\n",
	    "t.yaml:1:16: 'verdict_cache' must be a mapping\n"));
	CHECK(expect_errors("verdict_cache: { sise: 1M }\n",
	    "t.yaml:1:18: unknown key 'sise' in verdict_cache\n"));
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
	test_pack_role(cfg, ROLE_TLSD);
	buf_init(&b, 0);
	CHECK(config_pack(cfg, ROLE_PARENT, &b) == -1);
	buf_free(&b);
	/* Pack checks what it sends too. */
	cfg->actions[0].spamblocker.rules_data = (uint8_t *)"x";
	cfg->actions[0].spamblocker.rules_len = 17 * 1024 * 1024;
	buf_init(&b, 0);
	CHECK(config_pack(cfg, ROLE_SCAND, &b) == -1);
	buf_free(&b);
	cfg->actions[0].spamblocker.rules_data = NULL;
	cfg->actions[0].spamblocker.rules_len = 0;
	/* A cap too small for the blob. */
	buf_init(&b, 64);
	CHECK(config_pack(cfg, ROLE_NETD, &b) == -1);
	buf_free(&b);
	config_free(cfg);

	/* Every key of the sections, regexes and exceptions included. */
	cfg = load_ok(proxy_yaml);
	CHECK(cfg != NULL);
	if (cfg != NULL) {
		test_pack_role(cfg, ROLE_SCAND);
		test_pack_role(cfg, ROLE_NETD);
	}
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

/* auto_block: kept by the parent, sent to no child. */
static void
test_auto_block(void)
{
	static const struct {
		const char *text;
		uint64_t ms;
	} durations[] = {
	    {"auto_block: { duration: 1s }\n", 1000},
	    {"auto_block: { duration: 2 }\n", 2000},
	    {"auto_block: { duration: 3000ms }\n", 3000},
	    {"auto_block: { duration: 90m }\n", 90 * 60 * 1000},
	    {"auto_block: { duration: 30d }\n", 30ULL * 86400 * 1000},
	    {"auto_block: { duration: 720h }\n", 30ULL * 86400 * 1000},
	    {"auto_block:\n", 20 * 60 * 1000},
	    {"auto_block: { exceptions: [] }\n", 20 * 60 * 1000},
	};
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
	const struct cfg_auto_block *ab;
	struct config *cfg, *u;
	enum imapgw_role r;
	struct buf b;
	size_t i;

	for (i = 0; i < sizeof(durations) / sizeof(durations[0]); i++) {
		cfg = load_ok(durations[i].text);
		CHECK(cfg != NULL);
		if (cfg == NULL)
			continue;
		CHECK(cfg->auto_block.duration_ms == durations[i].ms);
		CHECK(cfg->auto_block.nexceptions == 0);
		config_free(cfg);
	}

	cfg = load_ok("auto_block:\n"
	              "  duration: 2s\n"
	              "  exceptions:\n"
	              "    - 127.0.0.0/8\n"
	              "    - \"::1\"\n"
	              "    - 192.0.2.77\n"
	              "    - 2001:db8::/32\n");
	CHECK(cfg != NULL);
	if (cfg == NULL)
		return;
	ab = &cfg->auto_block;
	CHECK(ab->duration_ms == 2000);
	CHECK(ab->nexceptions == 4);
	CHECK(strcmp(ab->exceptions[0].text, "127.0.0.0/8") == 0);
	CHECK(strcmp(ab->exceptions[1].text, "::1/128") == 0);
	CHECK(strcmp(ab->exceptions[2].text, "192.0.2.77/32") == 0);
	CHECK(strcmp(ab->exceptions[3].text, "2001:db8::/32") == 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
	CHECK(cidr_match(&ab->exceptions[0], (struct sockaddr *)&sin));
	CHECK(!cidr_match(&ab->exceptions[2], (struct sockaddr *)&sin));
	memset(&sin6, 0, sizeof(sin6));
	sin6.sin6_family = AF_INET6;
	inet_pton(AF_INET6, "2001:db8:1::5", &sin6.sin6_addr);
	CHECK(cidr_match(&ab->exceptions[3], (struct sockaddr *)&sin6));
	CHECK(!cidr_match(&ab->exceptions[1], (struct sockaddr *)&sin6));
	/* No child gets it. */
	for (r = ROLE_NETD; r < ROLE_MAX; r++) {
		buf_init(&b, 0);
		CHECK(config_pack(cfg, r, &b) == 0);
		u = config_unpack(b.data, b.len);
		CHECK(u != NULL);
		if (u != NULL)
			CHECK(u->auto_block.duration_ms == 0 &&
			      u->auto_block.nexceptions == 0 &&
			      u->auto_block.exceptions == NULL);
		config_free(u);
		buf_free(&b);
	}
	config_free(cfg);

	/* One item stands for a sequence of one. */
	cfg = load_ok("auto_block: { exceptions: 10.0.0.0/8 }\n");
	CHECK(cfg != NULL);
	if (cfg != NULL) {
		CHECK(cfg->auto_block.nexceptions == 1);
		CHECK(strcmp(cfg->auto_block.exceptions[0].text,
		          "10.0.0.0/8") == 0);
		CHECK(cfg->auto_block.duration_ms == 20 * 60 * 1000);
	}
	config_free(cfg);

	CHECK(expect_errors("auto_block:\n"
	                    "  duration: 0s\n"
	                    "  exceptions: [ 10.0.0.0/33, [a], any, x ]\n"
	                    "  ttl: 5\n",
	    "t.yaml:2:13: duration must be from 1s to 30d, in whole seconds\n"
	    "t.yaml:3:17: bad CIDR '10.0.0.0/33' (use any, an address or "
	    "address/prefix)\n"
	    "t.yaml:3:30: 'exceptions' entries must be strings\n"
	    "t.yaml:3:40: bad CIDR 'x' (use any, an address or "
	    "address/prefix)\n"
	    "t.yaml:4:3: unknown key 'ttl' in auto_block\n"));
	CHECK(expect_errors("auto_block: { duration: 31d }\n"
	                    "workers: { netd: 1 }\n",
	    "t.yaml:1:25: duration must be from 1s to 30d, in whole "
	    "seconds\n"));
	CHECK(expect_errors("auto_block: { duration: 1500ms }\n",
	    "t.yaml:1:25: duration must be from 1s to 30d, in whole "
	    "seconds\n"));
	CHECK(expect_errors("auto_block: { duration: 999ms }\n",
	    "t.yaml:1:25: duration must be from 1s to 30d, in whole "
	    "seconds\n"));
	CHECK(expect_errors("auto_block: { duration: 20 minutes, "
	                    "exceptions: { a: 1 } }\n",
	    "t.yaml:1:25: bad duration '20 minutes' (use a number with s, m, "
	    "h or d)\n"
	    "t.yaml:1:49: 'exceptions' must be a sequence\n"));
	CHECK(expect_errors("auto_block: [ 20m ]\n",
	    "t.yaml:1:13: 'auto_block' must be a mapping\n"));
	CHECK(expect_errors("auto_block: { duration: 20m, duration: 1m }\n",
	    "t.yaml:1:30: duplicate key 'duration' in auto_block (first at "
	    "line 1)\n"));
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

static int
write_file(const char *path, const char *text, size_t len)
{
	FILE *f;
	int ok;

	if ((f = fopen(path, "w")) == NULL)
		return -1;
	ok = fwrite(text, 1, len, f) == len;
	return fclose(f) == 0 && ok ? 0 : -1;
}

static const char apt_text[] =
    "# test database\n"
    "\n"
    "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f "
    "high EICAR\n"
    "44d88612fea8a8f36de82e1278abb02f low EICAR (MD5)\n";
static const char spam_text[] = "score body \"viagra\" 5\n";

/* Load a config made of fmt with the directory in place of each %s. */
static struct config *
load_dir(const char *fmt, const char *dir, char **errs)
{
	struct config *cfg;
	struct buf t;

	buf_init(&t, 0);
	buf_printf(&t, fmt, dir, dir, dir, dir, dir, dir);
	buf_add_u8(&t, 0);
	cfg = load((char *)t.data, errs);
	buf_free(&t);
	return cfg;
}

static const char files_yaml[] =
    "servers: {s: {members: [\"127.0.0.1:143\"]}}\n"
    "actions:\n"
    "  a:\n"
    "    apt_blocker: {database: %s/apt.db}\n"
    "    spamblocker: {rules: %s/spam.rules}\n"
    "  b: {inherit: a}\n"
    "  c: {apt_blocker: {database: %s/none.db}}\n"
    "  unused: {apt_blocker: {database: %s}, spamblocker: {rules: %s/no}}\n"
    "  off:\n"
    "    apt_blocker: {enabled: false, database: %s}\n"
    "policies:\n"
    "  - {name: p1, listen: \"127.0.0.1:1\", to: s, action: a}\n"
    "  - {name: p2, listen: \"127.0.0.1:2\", to: s, action: b}\n"
    "  - {name: p3, listen: \"127.0.0.1:3\", to: s, action: c}\n"
    "  - {name: p4, listen: \"127.0.0.1:4\", to: s, action: off}\n";

/* Errors: the key that named the file, inherited or not. */
static const char files_bad_yaml[] =
    "servers: {s: {members: [\"127.0.0.1:143\"]}}\n"
    "actions:\n"
    "  a: {spamblocker: {rules: %s/nonexistent}}\n"
    "  b: {apt_blocker: {database: %s}}\n"
    "  c: {inherit: b}\n"
    "  d: {spamblocker: {engine: spamd, rules: %s/nonexistent}}\n"
    "  e: {spamblocker: {enabled: false, rules: %s/nonexistent}}\n"
    "  f: {apt_blocker: {database: %s/big.db}, spamblocker: "
    "{rules: %s/big.db}}\n"
    "policies:\n"
    "  - {name: p1, listen: \"127.0.0.1:1\", to: s, action: a}\n"
    "  - {name: p2, listen: \"127.0.0.1:2\", to: s, action: b}\n"
    "  - {name: p3, listen: \"127.0.0.1:3\", to: s, action: c}\n"
    "  - {name: p4, listen: \"127.0.0.1:4\", to: s, action: d}\n"
    "  - {name: p5, listen: \"127.0.0.1:5\", to: s, action: e}\n"
    "  - {name: p6, listen: \"127.0.0.1:6\", to: s, action: f}\n";

static void
test_read_files(void)
{
	char dir[] = "/tmp/test_config.XXXXXX", path[512], want[4096];
	const struct cfg_action *a, *b, *c;
	struct config *cfg, *u;
	struct buf pk;
	char *errs;
	int fd;

	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/apt.db", dir);
	CHECK(write_file(path, apt_text, strlen(apt_text)) == 0);
	snprintf(path, sizeof(path), "%s/spam.rules", dir);
	CHECK(write_file(path, spam_text, strlen(spam_text)) == 0);

	cfg = load_dir(files_yaml, dir, &errs);
	CHECK(cfg != NULL);
	if (cfg == NULL)
		fprintf(stderr, "%s", errs);
	free(errs);
	if (cfg == NULL)
		goto out;
	a = &cfg->actions[2];
	b = &cfg->actions[3];
	c = &cfg->actions[4];
	CHECK(a->used && b->used && c->used && !cfg->actions[5].used);
	CHECK(
	    a->apt_blocker.len == strlen(apt_text) && !a->apt_blocker.missing);
	CHECK(a->apt_blocker.data != NULL &&
	      memcmp(a->apt_blocker.data, apt_text, strlen(apt_text)) == 0 &&
	      a->apt_blocker.data[a->apt_blocker.len] == '\0');
	CHECK(a->spamblocker.rules_len == strlen(spam_text));
	CHECK(a->spamblocker.rules_data != NULL &&
	      strcmp((char *)a->spamblocker.rules_data, spam_text) == 0);
	/* The same file for b, its own copy. */
	CHECK(b->apt_blocker.len == a->apt_blocker.len);
	CHECK(b->apt_blocker.data != NULL &&
	      b->apt_blocker.data != a->apt_blocker.data &&
	      memcmp(b->apt_blocker.data, apt_text, strlen(apt_text)) == 0);
	CHECK(b->spamblocker.rules_data != NULL &&
	      b->spamblocker.rules_data != a->spamblocker.rules_data);
	/* A database that does not exist: not an error, missing. */
	CHECK(c->apt_blocker.missing == 1 && c->apt_blocker.data == NULL);
	CHECK(c->apt_blocker.len == 0);
	/* The built-in rules: nothing to read. */
	CHECK(
	    c->spamblocker.rules == NULL && c->spamblocker.rules_data == NULL);
	/* Not used, or not enabled: not read (a directory would fail). */
	CHECK(cfg->actions[5].apt_blocker.data == NULL &&
	      !cfg->actions[5].apt_blocker.missing);
	CHECK(cfg->actions[5].spamblocker.rules_data == NULL);
	CHECK(cfg->actions[6].used && cfg->actions[6].apt_blocker.data == NULL);

	/* scand gets the bytes, b's as a reference to a's; netd none. */
	cfg->generation = 7;
	test_pack_role(cfg, ROLE_SCAND);
	pack_roundtrip(cfg, ROLE_NETD);
	buf_init(&pk, 0);
	CHECK(config_pack(cfg, ROLE_SCAND, &pk) == 0);
	CHECK(memmem(pk.data, pk.len, apt_text, strlen(apt_text)) != NULL);
	u = config_unpack(pk.data, pk.len);
	CHECK(u != NULL);
	if (u != NULL) {
		CHECK(u->actions[3].apt_blocker.data != NULL &&
		      u->actions[3].apt_blocker.data !=
		          u->actions[2].apt_blocker.data);
		CHECK(u->actions[4].apt_blocker.missing == 1);
	}
	config_free(u);
	{
		const uint8_t *p = memmem(pk.data, pk.len, apt_text, 20);

		/* Once only. */
		CHECK(p != NULL &&
		      memmem(p + 1, pk.len - (size_t)(p + 1 - pk.data),
		          apt_text, 20) == NULL);
	}
	buf_reset(&pk);
	CHECK(config_pack(cfg, ROLE_NETD, &pk) == 0);
	CHECK(memmem(pk.data, pk.len, apt_text, 20) == NULL);
	buf_free(&pk);
	config_free(cfg);

	/* An empty file is there, with no bytes: not the built-in rules. */
	snprintf(path, sizeof(path), "%s/spam.rules", dir);
	CHECK(write_file(path, "", 0) == 0);
	cfg = load_dir(files_yaml, dir, &errs);
	free(errs);
	CHECK(cfg != NULL);
	if (cfg != NULL) {
		CHECK(cfg->actions[2].spamblocker.rules_data != NULL);
		CHECK(cfg->actions[2].spamblocker.rules_len == 0);
		pack_roundtrip(cfg, ROLE_SCAND);
	}
	config_free(cfg);

	/* Files that cannot be read. */
	snprintf(path, sizeof(path), "%s/big.db", dir);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	CHECK(fd != -1 && ftruncate(fd, 257LL * 1024 * 1024) == 0);
	if (fd != -1)
		close(fd);
	snprintf(want, sizeof(want),
	    "t.yaml:3:28: action 'a': cannot read the spamblocker rules "
	    "%s/nonexistent: No such file or directory\n"
	    "t.yaml:4:31: action 'b': cannot read the apt_blocker database "
	    "%s: Is a directory\n"
	    "t.yaml:4:31: action 'c': cannot read the apt_blocker database "
	    "%s: Is a directory\n"
	    "t.yaml:8:31: action 'f': the apt_blocker database %s/big.db is "
	    "larger than 256M\n"
	    "t.yaml:8:%zu: action 'f': the spamblocker rules %s/big.db is "
	    "larger than 16M\n",
	    dir, dir, dir, dir, strlen(dir) + 62, dir);
	cfg = load_dir(files_bad_yaml, dir, &errs);
	CHECK(cfg == NULL && strcmp(errs, want) == 0);
	if (cfg != NULL || strcmp(errs, want) != 0)
		fprintf(stderr, "want:\n%sgot:\n%s", want, errs);
	free(errs);
	config_free(cfg);
	unlink(path);

	/* Unreadable (root reads everything: only as another user). */
	snprintf(path, sizeof(path), "%s/spam.rules", dir);
	if (geteuid() != 0 && chmod(path, 0) == 0) {
		cfg = load_dir(files_yaml, dir, &errs);
		snprintf(want, sizeof(want),
		    "t.yaml:5:25: action 'a': cannot read the spamblocker "
		    "rules %s/spam.rules: Permission denied\n",
		    dir);
		CHECK(cfg == NULL && strcmp(errs, want) == 0);
		free(errs);
		config_free(cfg);
	}
	unlink(path);

	/* A built-in action's default file: the policy that uses it. */
	if (access("/etc/imapgw/apt.db", F_OK) == -1) {
		cfg =
		    load_ok("servers: {s: {members: [\"127.0.0.1:143\"]}}\n"
		            "policies:\n"
		            "  - {name: p, listen: \"127.0.0.1:1\", to: s}\n");
		CHECK(cfg != NULL && cfg->actions[0].used &&
		      cfg->actions[0].apt_blocker.missing == 1);
		config_free(cfg);
	}
out:
	snprintf(path, sizeof(path), "%s/apt.db", dir);
	unlink(path);
	rmdir(dir);
}

/*
 * TLS: certificates made here with the OpenSSL API, in a temporary
 * directory.
 */

static char tls_dir[64];

static void
tls_path(char *out, size_t len, const char *name)
{
	snprintf(out, len, "%s/%s", tls_dir, name);
}

static void
tls_write_text(const char *name, const char *text, int mode)
{
	char path[256];

	tls_path(path, sizeof(path), name);
	CHECK(write_file(path, text, strlen(text)) == 0);
	CHECK(chmod(path, (mode_t)mode) == 0);
}

/* A self-signed P-256 certificate valid from now + from to now + to
 * days: name.crt, name.key (mode 0600). */
static void
tls_write_ocsp(const char *name, OCSP_RESPONSE *r)
{
	unsigned char *der = NULL;
	char path[256];
	int n;
	FILE *f;

	tls_path(path, sizeof(path), name);
	CHECK((n = i2d_OCSP_RESPONSE(r, &der)) > 0);
	CHECK((f = fopen(path, "w")) != NULL);
	CHECK(fwrite(der, 1, (size_t)n, f) == (size_t)n);
	fclose(f);
	OPENSSL_free(der);
	OCSP_RESPONSE_free(r);
}

static void
tls_make_cert(const char *name, const char *cn, long from, long to)
{
	char path[256], file[128];
	EVP_PKEY *k;
	X509_NAME *n;
	X509 *x;
	FILE *f;

	k = EVP_EC_gen("P-256");
	x = X509_new();
	CHECK(k != NULL && x != NULL);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), from * 86400);
	X509_gmtime_adj(X509_getm_notAfter(x), to * 86400);
	X509_set_pubkey(x, k);
	n = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(
	    n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, n);
	CHECK(X509_sign(x, k, EVP_sha256()) > 0);
	snprintf(file, sizeof(file), "%s.crt", name);
	tls_path(path, sizeof(path), file);
	CHECK((f = fopen(path, "w")) != NULL);
	PEM_write_X509(f, x);
	fclose(f);
	snprintf(file, sizeof(file), "%s.key", name);
	tls_path(path, sizeof(path), file);
	CHECK((f = fopen(path, "w")) != NULL);
	PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
	fclose(f);
	CHECK(chmod(path, 0600) == 0);
	/* An OCSP response (signed by the certificate itself: the loader
	 * only checks that it parses and is successful). */
	if (strcmp(name, "gw") == 0) {
		OCSP_BASICRESP *bs = OCSP_BASICRESP_new();
		OCSP_RESPONSE *r;

		CHECK(OCSP_basic_sign(bs, x, k, EVP_sha256(), NULL, 0) == 1);
		r = OCSP_response_create(OCSP_RESPONSE_STATUS_SUCCESSFUL, bs);
		tls_write_ocsp("gw.ocsp", r);
		OCSP_BASICRESP_free(bs);
		r = OCSP_response_create(OCSP_RESPONSE_STATUS_TRYLATER, NULL);
		tls_write_ocsp("later.ocsp", r);
	}
	X509_free(x);
	EVP_PKEY_free(k);
}

static void
tls_setup(void)
{
	snprintf(tls_dir, sizeof(tls_dir), "/tmp/test_config_tls.XXXXXX");
	CHECK(mkdtemp(tls_dir) != NULL);
	tls_make_cert("gw", "gw.example", -1, 30);
	tls_make_cert("other", "other.example", -1, 30);
	tls_make_cert("old", "old.example", -30, -1);
	tls_make_cert("new", "new.example", 10, 30);
	tls_write_text("garbage.pem", "not a certificate\n", 0644);
	tls_write_text("enc.key",
	    "-----BEGIN ENCRYPTED PRIVATE KEY-----\n"
	    "MIGbMFcGCSqGSIb3DQEFDTBKMCkGCSqGSIb3DQEFDDAcBAh3\n"
	    "-----END ENCRYPTED PRIVATE KEY-----\n",
	    0600);
}

static void
tls_cleanup(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tls_dir);
	CHECK(system(cmd) == 0);
}

/* printf the text with %1$s as the directory (every %s is it). */
static char *
tls_text(const char *fmt)
{
	struct buf b;
	const char *p;
	char *s;

	buf_init(&b, 0);
	for (p = fmt; *p != '\0'; p++) {
		if (p[0] == '@' && p[1] == 'D') {
			buf_add(&b, tls_dir, strlen(tls_dir));
			p++;
		} else
			buf_add_u8(&b, (uint8_t)*p);
	}
	buf_add_u8(&b, 0);
	s = strdup((char *)b.data);
	buf_free(&b);
	return s;
}

static int
tls_errors(const char *text, const char *want)
{
	char *t = tls_text(text), *w = tls_text(want);
	int ok = expect_errors(t, w);

	free(t);
	free(w);
	return ok;
}

static void
test_tls_defaults(void)
{
	struct config *cfg;
	const struct cfg_tls_profile *p;

	cfg = load_ok("servers: {s: {members: [\"127.0.0.1:143\"]}}\n"
	              "policies:\n"
	              "  - {name: p, listen: \"127.0.0.1:1143\", to: s}\n");
	CHECK(cfg != NULL);
	if (cfg == NULL)
		return;
	CHECK(cfg->ncerts == 0 && cfg->certs == NULL);
	CHECK(cfg->nprofiles == 1);
	p = &cfg->profiles[0];
	CHECK(strcmp(p->name, "default") == 0);
	CHECK(p->min_version == TLS1_2_VERSION);
	CHECK(p->ciphers == NULL && p->ciphersuites == NULL);
	CHECK(p->compliant_only == 0 && p->verify_peer == 1);
	CHECK(p->ca_file == NULL && p->ca_pem == NULL);
	CHECK(p->session_cache == 1 && p->session_timeout_ms == 300000);
	CHECK(cfg->servers[0].tls == SRV_TLS_NONE);
	CHECK(strcmp(cfg->servers[0].tls_profile, "default") == 0);
	CHECK(cfg->servers[0].profileidx == 0);
	CHECK(cfg->servers[0].server_name == NULL);
	CHECK(cfg->policies[0].tls.mode == TLS_MODE_DISABLED);
	CHECK(cfg->policies[0].tls.ncerts == 0);
	CHECK(strcmp(cfg->policies[0].tls.profile, "default") == 0);
	CHECK(cfg->policies[0].tls.profileidx == 0);
	CHECK(cfg->warnings == NULL);
	config_free(cfg);

	/* The embedded default config needs no certificate. */
	cfg = load_ok(config_default_yaml);
	CHECK(cfg != NULL && cfg->ncerts == 0 && cfg->nprofiles == 1);
	config_free(cfg);
}

static const char tls_yaml[] =
    "certificates:\n"
    "  gateway: { cert: @D/gw.crt, key: @D/gw.key, ocsp: @D/gw.ocsp }\n"
    "  other: { cert: @D/other.crt, key: @D/other.key }\n"
    "tls_profiles:\n"
    "  strict:\n"
    "    min_version: \"1.3\"\n"
    "    ciphers: \"ECDHE+AESGCM\"\n"
    "    ciphersuites: \"TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256\"\n"
    "    compliant_only: true\n"
    "    verify_peer: false\n"
    "    ca_file: @D/other.crt\n"
    "    session_cache: false\n"
    "    session_timeout: 1h\n"
    "  default: { min_version: 1.1, ca_file: @D/gw.crt }\n"
    "servers:\n"
    "  m:\n"
    "    tls: implicit\n"
    "    tls_profile: strict\n"
    "    server_name: mail.example.org\n"
    "    members: [ \"127.0.0.1:993\" ]\n"
    "  n:\n"
    "    tls: starttls\n"
    "    members: [ \"localhost:143\" ]\n"
    "policies:\n"
    "  - name: p\n"
    "    listen: [ \"127.0.0.1:1143\",\n"
    "              { address: \"127.0.0.1:1993\", tls: implicit } ]\n"
    "    to: m\n"
    "    tls: { mode: required, certificate: [other, gateway],\n"
    "           profile: strict }\n"
    "  - name: q\n"
    "    listen: [ { address: \"127.0.0.1:1994\", tls: implicit } ]\n"
    "    to: n\n"
    "    tls: { certificate: gateway }\n";

static int
read_file(const char *path, uint8_t **data, size_t *len)
{
	FILE *f;
	long n;

	*data = NULL;
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	if (fseek(f, 0, SEEK_END) == -1 || (n = ftell(f)) < 0 ||
	    fseek(f, 0, SEEK_SET) == -1 ||
	    (*data = malloc((size_t)n + 1)) == NULL ||
	    fread(*data, 1, (size_t)n, f) != (size_t)n) {
		fclose(f);
		free(*data);
		return -1;
	}
	fclose(f);
	*len = (size_t)n;
	return 0;
}

/* Is needle anywhere in the blob? */
static int
has_bytes(const struct buf *b, const char *needle)
{
	return memmem(b->data, b->len, needle, strlen(needle)) != NULL;
}

static void
test_tls_pack(const struct config *cfg)
{
	struct config *u, *u2;
	struct buf b, b2;
	char path[256];
	char keyline[33];
	uint8_t *key;
	size_t klen = 0;

	/* A line of the key's base64, to look for in the blobs. */
	tls_path(path, sizeof(path), "gw.key");
	CHECK(read_file(path, &key, &klen) == 0 && klen > 128);
	if (key == NULL || klen <= 128) {
		free(key);
		return;
	}
	memcpy(keyline, key + 93, 32); /* the second base64 line */
	keyline[32] = '\0';
	free(key);

	/* netd: names and modes, no bytes of any file. */
	buf_init(&b, 0);
	CHECK(config_pack(cfg, ROLE_NETD, &b) == 0);
	CHECK(!has_bytes(&b, keyline));
	CHECK(!has_bytes(&b, "PRIVATE KEY"));
	CHECK(!has_bytes(&b, "BEGIN CERTIFICATE"));
	CHECK(!has_bytes(&b, cfg->certs[0].fingerprint));
	u = config_unpack(b.data, b.len);
	CHECK(u != NULL);
	if (u != NULL) {
		CHECK(u->ncerts == 0 && u->nprofiles == 0);
		check_servers(cfg, u);
		check_policies(cfg, u);
		CHECK(u->policies[0].tls.mode == TLS_MODE_REQUIRED);
		CHECK(u->policies[0].tls.ncerts == 2);
		CHECK(strcmp(u->policies[0].tls.certs[1], "gateway") == 0);
		CHECK(u->policies[0].listen[1].tls == LISTEN_TLS_IMPLICIT);
		CHECK(u->policies[1].tls.mode == TLS_MODE_DISABLED);
		CHECK(
		    strcmp(u->servers[0].server_name, "mail.example.org") == 0);
		CHECK(strcmp(u->servers[0].tls_profile, "strict") == 0);
		config_free(u);
	}
	check_truncations(&b);
	buf_free(&b);

	/* tlsd: the bytes, read from the files now. */
	buf_init(&b, 0);
	CHECK(config_pack(cfg, ROLE_TLSD, &b) == 0);
	CHECK(has_bytes(&b, keyline));
	CHECK(has_bytes(&b, "PRIVATE KEY"));
	CHECK(has_bytes(&b, "BEGIN CERTIFICATE"));
	/* The parent keeps no copy. */
	CHECK(cfg->certs[0].key_pem == NULL && cfg->certs[0].cert_pem == NULL);
	u = config_unpack(b.data, b.len);
	CHECK(u != NULL);
	if (u != NULL) {
		CHECK(u->role == ROLE_TLSD);
		check_servers(cfg, u);
		check_tlsd(cfg, u);
		tls_path(path, sizeof(path), "gw.key");
		CHECK(read_file(path, &key, &klen) == 0);
		CHECK(u->certs[0].key_len == klen &&
		      memcmp(u->certs[0].key_pem, key, klen) == 0);
		free(key);
		CHECK(u->certs[0].ocsp_der != NULL && u->certs[0].ocsp_len > 0);
		CHECK(u->certs[1].ocsp_der == NULL);
		CHECK(u->profiles[1].min_version == TLS1_3_VERSION);
		CHECK(u->profiles[0].min_version == TLS1_1_VERSION);
		CHECK(u->profiles[1].ca_pem != NULL);
		CHECK(u->policies[0].tls.certidx[0] == 1);
		CHECK(u->policies[0].tls.certidx[1] == 0);
		CHECK(u->policies[0].tls.profileidx == 1);
		CHECK(u->servers[0].profileidx == 1);
		CHECK(u->servers[1].profileidx == 0);
		CHECK(strcmp(u->servers[1].members[0].host, "localhost:143") ==
		      0);
		/* Packed again from tlsd's copy: the same bytes. */
		buf_init(&b2, 0);
		CHECK(config_pack(u, ROLE_TLSD, &b2) == 0);
		CHECK(b2.len == b.len && memcmp(b2.data, b.data, b.len) == 0);
		u2 = config_unpack(b2.data, b2.len);
		CHECK(u2 != NULL);
		config_free(u2);
		buf_free(&b2);
		config_free(u);
	}
	check_truncations(&b);
	check_corruptions(&b);
	buf_free(&b);

	/* A file gone since the load: no blob for tlsd. */
	tls_path(path, sizeof(path), "other.key");
	CHECK(rename(path, "/tmp/test_config_tls.moved") == 0);
	buf_init(&b, 0);
	CHECK(config_pack(cfg, ROLE_TLSD, &b) == -1);
	buf_free(&b);
	CHECK(rename("/tmp/test_config_tls.moved", path) == 0);
}

static void
test_tls_valid(void)
{
	const struct cfg_tls_profile *p;
	struct config *cfg;
	char *text = tls_text(tls_yaml);

	cfg = load_ok(text);
	free(text);
	CHECK(cfg != NULL);
	if (cfg == NULL)
		return;
	CHECK(cfg->warnings == NULL);
	CHECK(cfg->ncerts == 2);
	CHECK(strcmp(cfg->certs[0].name, "gateway") == 0);
	CHECK(cfg->certs[0].ocsp != NULL && cfg->certs[1].ocsp == NULL);
	CHECK(strcmp(cfg->certs[0].subject, "CN=gw.example") == 0);
	CHECK(cfg->certs[0].fingerprint != NULL &&
	      strlen(cfg->certs[0].fingerprint) == 95 &&
	      cfg->certs[0].fingerprint[2] == ':');
	/* Checked, then forgotten: no bytes kept by the parent. */
	CHECK(cfg->certs[0].key_pem == NULL && cfg->certs[0].cert_pem == NULL);
	CHECK(cfg->certs[0].ocsp_der == NULL);
	CHECK(cfg->nprofiles == 2);
	p = &cfg->profiles[0];
	CHECK(strcmp(p->name, "default") == 0);
	CHECK(p->min_version == TLS1_1_VERSION && p->verify_peer == 1);
	CHECK(p->ca_pem != NULL && p->ca_file != NULL);
	p = &cfg->profiles[1];
	CHECK(strcmp(p->name, "strict") == 0);
	CHECK(p->min_version == TLS1_3_VERSION);
	CHECK(strcmp(p->ciphers, "ECDHE+AESGCM") == 0);
	CHECK(strcmp(p->ciphersuites,
	          "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256") == 0);
	CHECK(p->compliant_only == 1 && p->verify_peer == 0);
	CHECK(p->ca_file != NULL && p->ca_pem != NULL && p->ca_len > 0);
	CHECK(p->session_cache == 0 && p->session_timeout_ms == 3600000);
	CHECK(cfg->servers[0].tls == SRV_TLS_IMPLICIT);
	CHECK(cfg->servers[0].profileidx == 1);
	CHECK(strcmp(cfg->servers[0].server_name, "mail.example.org") == 0);
	CHECK(cfg->servers[1].tls == SRV_TLS_STARTTLS);
	CHECK(cfg->servers[1].profileidx == 0);
	CHECK(cfg->policies[0].tls.mode == TLS_MODE_REQUIRED);
	CHECK(cfg->policies[0].tls.ncerts == 2);
	CHECK(cfg->policies[0].tls.certidx[0] == 1);
	CHECK(cfg->policies[0].tls.certidx[1] == 0);
	CHECK(cfg->policies[0].tls.profileidx == 1);
	CHECK(cfg->policies[0].listen[1].tls == LISTEN_TLS_IMPLICIT);
	CHECK(cfg->policies[1].tls.mode == TLS_MODE_DISABLED);
	CHECK(cfg->policies[1].tls.ncerts == 1);
	CHECK(cfg->policies[1].tls.certidx[0] == 0);
	test_tls_pack(cfg);
	config_free(cfg);
}

static void
test_tls_versions(void)
{
	static const struct {
		const char *v;
		int want;
	} vs[] = {
	    {"\"1.0\"", TLS1_VERSION},
	    {"1.1", TLS1_1_VERSION},
	    {"'1.2'", TLS1_2_VERSION},
	    {"1.3", TLS1_3_VERSION},
	};
	struct config *cfg;
	char text[128];
	size_t i;

	for (i = 0; i < sizeof(vs) / sizeof(vs[0]); i++) {
		snprintf(text, sizeof(text),
		    "tls_profiles: { x: { min_version: %s } }\n", vs[i].v);
		cfg = load_ok(text);
		CHECK(cfg != NULL && cfg->nprofiles == 2 &&
		      cfg->profiles[1].min_version == vs[i].want &&
		      cfg->profiles[0].min_version == TLS1_2_VERSION);
		config_free(cfg);
	}
	CHECK(expect_errors("tls_profiles: { x: { min_version: 1.4 } }\n",
	    "t.yaml:1:35: min_version must be 1.0, 1.1, 1.2 or 1.3\n"));
	CHECK(expect_errors("tls_profiles: { x: { min_version: 1 } }\n",
	    "t.yaml:1:35: min_version must be 1.0, 1.1, 1.2 or 1.3\n"));
}

static void
test_tls_errors(void)
{
	struct config *cfg;
	char *text;

	CHECK(tls_errors("certificates:\n"
	                 "  a: { cert: @D/gw.crt, key: @D/other.key }\n"
	                 "  b: { cert: @D/nope.crt, key: @D/gw.key }\n"
	                 "  c: { cert: @D/gw.crt }\n"
	                 "  d: { cert: gw.crt, key: @D/gw.key }\n"
	                 "  e: { cert: @D/garbage.pem, key: @D/gw.key }\n"
	                 "  f: { cert: @D/gw.crt, key: @D/garbage.pem }\n"
	                 "  g: { cert: @D/gw.crt, key: @D/enc.key }\n"
	                 "  h: { cert: @D/gw.crt, key: @D/gw.key,"
	                 " ocsp: @D/gw.crt }\n"
	                 "  i: { cert: @D/gw.crt, key: @D/gw.key,"
	                 " ocsp: @D/later.ocsp }\n"
	                 "  j: { cert: @D, key: @D/gw.key, x: 1 }\n",
	    "t.yaml:2:55: certificate 'a': key @D/other.key does not "
	    "match the certificate @D/gw.crt\n"
	    "t.yaml:3:14: certificate 'b': cannot read @D/nope.crt: No "
	    "such file or directory\n"
	    "t.yaml:4:6: missing required key 'key' in certificate 'c'\n"
	    "t.yaml:5:14: 'cert' must be an absolute path\n"
	    "t.yaml:6:14: certificate 'e': @D/garbage.pem is not a PEM "
	    "certificate (and chain)\n"
	    "t.yaml:7:55: certificate 'f': @D/garbage.pem is not a PEM "
	    "private key (encrypted keys are not supported)\n"
	    "t.yaml:8:55: certificate 'g': @D/enc.key is not a PEM "
	    "private key (encrypted keys are not supported)\n"
	    "t.yaml:9:97: certificate 'h': @D/gw.crt is not a DER OCSP "
	    "response\n"
	    "t.yaml:10:97: certificate 'i': the OCSP response "
	    "@D/later.ocsp is not successful (trylater)\n"
	    "t.yaml:11:84: unknown key 'x' in certificate 'j'\n"));
	CHECK(tls_errors("certificates:\n"
	                 "  j: { cert: @D, key: @D/gw.key }\n",
	    "t.yaml:2:14: certificate 'j': cannot read @D: Is a "
	    "directory\n"));
	/* CA files: unreadable, no certificate in it. */
	CHECK(tls_errors("tls_profiles:\n"
	                 "  a: { ca_file: @D/none.pem }\n"
	                 "  b: { ca_file: @D/garbage.pem }\n"
	                 "  c: { ca_file: @D/gw.key }\n",
	    "t.yaml:2:17: tls_profile 'a': cannot read @D/none.pem: No "
	    "such file or directory\n"
	    "t.yaml:3:17: tls_profile 'b': the CA file @D/garbage.pem has "
	    "no PEM certificate\n"
	    "t.yaml:4:17: tls_profile 'c': the CA file @D/gw.key has no "
	    "PEM certificate\n"));
	/* Cipher strings, booleans, durations. */
	CHECK(expect_errors(
	    "tls_profiles:\n"
	    "  a: { ciphers: \"NOPE:ALSO-NOPE\", ciphersuites: \"TLS_NOPE\" }\n"
	    "  b: { ciphers: \"TLS_AES_128_GCM_SHA256\" }\n"
	    "  c: { compliant_only: maybe, verify_peer: 2,"
	    " session_cache: [] }\n"
	    "  d: { session_timeout: 0s }\n"
	    "  e: { session_timeout: 2d, ciphers: \"\" }\n"
	    "  f: [ 1 ]\n",
	    "t.yaml:2:17: tls_profile 'a': ciphers 'NOPE:ALSO-NOPE' selects "
	    "no cipher\n"
	    "t.yaml:2:49: tls_profile 'a': ciphersuites 'TLS_NOPE' selects "
	    "no cipher suite\n"
	    "t.yaml:3:17: tls_profile 'b': ciphers 'TLS_AES_128_GCM_SHA256' "
	    "selects no cipher\n"
	    "t.yaml:4:24: 'compliant_only' must be true or false\n"
	    "t.yaml:4:44: 'verify_peer' must be true or false\n"
	    "t.yaml:4:62: 'session_cache' must be true or false\n"
	    "t.yaml:5:25: session_timeout must be from 1s to 24h\n"
	    "t.yaml:6:25: session_timeout must be from 1s to 24h\n"
	    "t.yaml:6:38: 'ciphers' must not be empty\n"
	    "t.yaml:7:6: 'f' must be a mapping\n"));
	/* Names: unknown certificates and profiles, TLS without one. */
	CHECK(tls_errors(
	    "certificates:\n"
	    "  gw: { cert: @D/gw.crt, key: @D/gw.key }\n"
	    "servers:\n"
	    "  s: { tls_profile: strict, members: [\"127.0.0.1:143\"] }\n"
	    "  t: { server_name: \"bad name\", tls: tls,"
	    " members: [\"127.0.0.1:143\"] }\n"
	    "policies:\n"
	    "  - name: p\n"
	    "    listen: [\"127.0.0.1:1143\"]\n"
	    "    to: s\n"
	    "    tls: { mode: required, certificate: [gw, nope, gw],"
	    " profile: strict }\n"
	    "  - name: q\n"
	    "    listen: [{ address: \"127.0.0.1:1993\", tls: implicit }]\n"
	    "    to: s\n"
	    "    tls: { mode: enabled }\n"
	    "  - name: r\n"
	    "    listen: [\"127.0.0.1:1144\"]\n"
	    "    to: s\n"
	    "    tls: { mode: always, certificate: [], x: y }\n",
	    "t.yaml:4:21: server 's': no tls_profile named 'strict'\n"
	    "t.yaml:5:21: server_name 'bad name' must be a DNS host name "
	    "(letters, digits, '-' and '.', at most 255 bytes)\n"
	    "t.yaml:5:38: tls must be none, starttls or implicit\n"
	    "t.yaml:10:46: policy 'p': no certificate named 'nope'\n"
	    "t.yaml:10:52: policy 'p': certificate 'gw' is named twice\n"
	    "t.yaml:10:66: policy 'p': no tls_profile named 'strict'\n"
	    "t.yaml:12:25: policy 'q': the implicit TLS listener "
	    "127.0.0.1:1993 needs a certificate (tls: { certificate: NAME "
	    "})\n"
	    "t.yaml:14:18: policy 'q': tls mode enabled needs a certificate "
	    "(tls: { certificate: NAME })\n"
	    "t.yaml:18:18: mode must be disabled, enabled or required\n"
	    "t.yaml:18:39: 'certificate' must not be empty\n"
	    "t.yaml:18:43: unknown key 'x' in tls of policy 'r'\n"));
	CHECK(expect_errors("servers:\n"
	                    "  s: { server_name: 10.0.0.1, members: "
	                    "[\"127.0.0.1:143\"] }\n",
	    "t.yaml:2:21: server_name '10.0.0.1' must be a DNS host name "
	    "(letters, digits, '-' and '.', at most 255 bytes)\n"));
	/* A server verified without ca_file: the system's store. */
	if (access(CFG_TLS_SYSTEM_CA, R_OK) == 0) {
		cfg = load_ok("servers: { s: { tls: implicit, members: "
		              "[\"127.0.0.1:993\"] },\n"
		              "  t: { members: [\"127.0.0.1:143\"] } }\n");
		CHECK(cfg != NULL && cfg->profiles[0].ca_pem != NULL &&
		      cfg->profiles[0].ca_file == NULL);
		config_free(cfg);
	}
	cfg = load_ok("servers: { t: { members: [\"127.0.0.1:143\"] } }\n");
	CHECK(cfg != NULL && cfg->profiles[0].ca_pem == NULL);
	config_free(cfg);

	/* A profile named default sets the built-in's values. */
	cfg = load_ok("tls_profiles: { default: { verify_peer: off } }\n");
	CHECK(cfg != NULL && cfg->nprofiles == 1 &&
	      cfg->profiles[0].verify_peer == 0 &&
	      cfg->profiles[0].min_version == TLS1_2_VERSION);
	config_free(cfg);

	/* Warnings: expired, not yet valid, a key others can read. */
	text = tls_text("certificates:\n"
	                "  old: { cert: @D/old.crt, key: @D/old.key }\n"
	                "  new: { cert: @D/new.crt, key: @D/new.key }\n"
	                "  gw: { cert: @D/gw.crt, key: @D/gw.key }\n");
	{
		char path[256];

		tls_path(path, sizeof(path), "gw.key");
		CHECK(chmod(path, 0640) == 0);
		cfg = load_ok(text);
		CHECK(chmod(path, 0600) == 0);
	}
	free(text);
	CHECK(cfg != NULL && cfg->warnings != NULL);
	if (cfg != NULL && cfg->warnings != NULL) {
		CHECK(strstr(cfg->warnings, "t.yaml:2:16: warning: "
		                            "certificate 'old': ") != NULL);
		CHECK(strstr(cfg->warnings, "/old.crt expired on ") != NULL);
		CHECK(strstr(cfg->warnings, "t.yaml:3:16: warning: "
		                            "certificate 'new': ") != NULL);
		CHECK(strstr(cfg->warnings, "/new.crt is not valid before ") !=
		      NULL);
		CHECK(strstr(cfg->warnings,
		          "t.yaml:4:56: warning: certificate 'gw': the key "
		          "file ") != NULL);
		CHECK(strstr(cfg->warnings, "can be read by others (mode "
		                            "0640); make it 0600\n") != NULL);
	}
	config_free(cfg);
}

/* to: original-destination, tls.authority: the client proxy. */
static void
test_tls_client_proxy(void)
{
	struct config *cfg;
	const struct cfg_server *s;
	struct buf b;
	char *text;

	text = tls_text("certificates:\n"
	                "  ca: { cert: @D/gw.crt, key: @D/gw.key }\n"
	                "tls_profiles:\n"
	                "  out: { ca_file: @D/other.crt }\n"
	                "policies:\n"
	                "  - name: cp\n"
	                "    listen: [ { address: \"127.0.0.1:1993\","
	                " tls: implicit } ]\n"
	                "    to: original-destination\n"
	                "    tls: { authority: ca, profile: out }\n"
	                "  - name: plain\n"
	                "    listen: [ \"127.0.0.1:1143\" ]\n"
	                "    to: original-destination\n");
	cfg = load_ok(text);
	free(text);
	CHECK(cfg != NULL);
	if (cfg == NULL)
		return;
	CHECK(cfg->npolicies == 2 && cfg->nservers == 2);
	CHECK(cfg->policies[0].original == 1);
	CHECK(cfg->policies[0].tls.authority_idx == 0);
	s = &cfg->servers[cfg->policies[0].server];
	CHECK(strcmp(s->name, "original-destination:cp") == 0);
	CHECK(strcmp(cfg->policies[0].to, s->name) == 0);
	CHECK(s->tls == SRV_TLS_IMPLICIT && s->nmembers == 1);
	CHECK(strcmp(cfg->profiles[s->profileidx].name, "out") == 0);
	CHECK(s->send_id == 0);
	s = &cfg->servers[cfg->policies[1].server];
	CHECK(strcmp(s->name, "original-destination:plain") == 0);
	CHECK(s->tls == SRV_TLS_NONE);
	CHECK(cfg->policies[1].tls.authority_idx == -1);
	/* What netd and tlsd get unpacks with the same meaning. */
	buf_init(&b, 0);
	CHECK(config_pack(cfg, ROLE_NETD, &b) == 0);
	{
		struct config *u = config_unpack(buf_head(&b), buf_used(&b));

		CHECK(u != NULL && u->policies[0].original == 1 &&
		      strcmp(u->policies[0].tls.authority, "ca") == 0);
		config_free(u);
	}
	buf_reset(&b);
	CHECK(config_pack(cfg, ROLE_TLSD, &b) == 0);
	{
		struct config *u = config_unpack(buf_head(&b), buf_used(&b));

		CHECK(u != NULL && u->policies[0].tls.authority_idx == 0);
		config_free(u);
	}
	buf_free(&b);
	config_free(cfg);

	CHECK(tls_errors("certificates:\n"
	                 "  ca: { cert: @D/gw.crt, key: @D/gw.key }\n"
	                 "servers:\n"
	                 "  original-destination: { members: "
	                 "[ \"127.0.0.1:143\" ] }\n"
	                 "  m: { members: [ \"127.0.0.1:143\" ] }\n"
	                 "policies:\n"
	                 "  - name: a\n"
	                 "    listen: [ \"127.0.0.1:1143\" ]\n"
	                 "    to: m\n"
	                 "    tls: { authority: ca }\n"
	                 "  - name: b\n"
	                 "    listen: [ \"127.0.0.1:1144\",\n"
	                 "      { address: \"127.0.0.1:1993\","
	                 " tls: implicit } ]\n"
	                 "    to: original-destination\n"
	                 "    tls: { authority: nope }\n",
	    "t.yaml:10:23: policy 'a': a Proxy Authority is for to: "
	    "original-destination only\n"
	    "t.yaml:14:9: policy 'b': to: original-destination needs its "
	    "listeners all implicit TLS or all plain (the server is reached "
	    "the same way)\n"
	    "t.yaml:15:23: policy 'b': no certificate named 'nope'\n"));
}

static void
test_tls(void)
{
	tls_setup();
	test_tls_defaults();
	test_tls_valid();
	test_tls_versions();
	test_tls_errors();
	test_tls_client_proxy();
	tls_cleanup();
}

int
main(void)
{
	test_default();
	test_minimal();
	test_builtins();
	test_full();
	test_proxy_keys();
	test_inherit_sections();
	test_rule_limit();
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
	test_consistency();
	test_auto_block();
	test_files();
	test_read_files();
	test_tls();
	return test_done("test_config");
}
