/*
 * One scan request: check it, judge the message under its proxy action,
 * rewrite it where the action says so, and build the answer (scan.h).
 *
 * The pipeline, in Fireware's order:
 *
 *   1. header rules      each top-level field, as "Name: value"
 *   2. content types     each leaf part: its declared type and, with
 *      and file names    auto_detect, the type libmagic sees in its
 *                        decoded bytes; its file name; the same for the
 *                        members of the archives it is (ZIP, GZIP, tar),
 *                        down to general.max_archive_depth
 *   3. antivirus         each decoded leaf part, then the whole message
 *                        as it is (libclamav parses mail itself, and a
 *                        part our parser sees differently must not slip
 *                        through)
 *   4. APT Blocker       SHA-256 and MD5 of each leaf part and archive
 *                        member that antivirus found clean
 *   5. spamBlocker       the whole message (fetches only)
 *
 * Every stage adds findings; each finding asks for an action.  A part
 * action (strip, lock) applies to the part a client sees: a leaf in a
 * multipart, or the message/rfc822 part around it; when the finding is
 * the body of the message itself, strip becomes deny and lock locks the
 * whole message.  Message actions (deny, drop, block) override every
 * part action; header strips, the spam tag and the spam header combine
 * with part actions.  Scan errors get antivirus.on_error and are never
 * taken as clean.  An upload (SCAN_APPEND) is never rewritten: whatever
 * is not allowed is rejected, or drops the session; spamBlocker does not
 * judge uploads.
 *
 * Rewrites are deterministic and minimal.  Every edit replaces a byte
 * range of the original: a stripped header field is cut out, the tag is
 * put before the Subject's value, a stripped or locked part is replaced
 * from its first header byte to the end of its body; every other byte
 * stays as it was.  deny builds a new message from the original's
 * envelope and threading fields and the deny message.  Locking is
 * deterministic too (common/lock.h).  No date, no random boundary.
 *
 * A rewritten fetched message comes with the sections netd asked for
 * (section.c), computed on the rewritten message, so that BODY[2],
 * BINARY[1], HEADER.FIELDS and the like answer from it as the server
 * would.
 */
#include <sys/mman.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "lock.h"
#include "log.h"
#include "scand.h"
#include "util.h"

#define SCAN_MAX_FINDINGS 64 /* more are counted, not kept */
#define SCAN_MAX_APT_PENDING 32 /* APT hits of one part, before AV */

enum scan_stage {
	ST_HEADER = 0,
	ST_CTYPE,
	ST_FILENAME,
	ST_AV,
	ST_APT,
	ST_SPAM,
	ST_ERROR,
	ST_OVERSIZE
};

static const char *const scan_stages[] = {
    [ST_HEADER] = "header",
    [ST_CTYPE] = "content_type",
    [ST_FILENAME] = "filename",
    [ST_AV] = "antivirus",
    [ST_APT] = "apt",
    [ST_SPAM] = "spam",
    [ST_ERROR] = "error",
    [ST_OVERSIZE] = "oversize",
};

static const char *const scan_levels[] = {"high", "medium", "low"};
static const char *const scan_cats[] = {"confirmed", "bulk", "suspect"};

/* Something a stage found, and the action it asks for. */
struct scan_find {
	int stage;
	int action; /* ACT_* */
	int alarm, log; /* of the rule */
	char what[256]; /* virus, rule name, threat name, error, category */
	char subject[256]; /* what the rule matched: type, name, field */
	char section[64]; /* IMAP part number; "" for the whole message */
	char filename[256];
	char member[256]; /* archive member path, "" if none */
	char type[96]; /* declared content type */
	char detected[96]; /* libmagic's */
	char sha256[65], md5[33];
	int level; /* APT */
	int category; /* spam, -1 if none */
	double score;
	const struct mime_part *part; /* NULL: the whole message */
	size_t field; /* ST_HEADER: index into the root's fields */
};

/* An APT hit held until antivirus has judged its part. */
struct scan_apt_hit {
	struct apt_hit hit;
	char member[256];
};

/* The compiled parts of an action. */
struct scan_rt {
	struct rule_set *ct, *fn, *hdr;
	struct apt_db *apt;
	struct spam_engine *spam;
};

struct scan_job {
	const struct cfg_action *act;
	const struct scan_rt *rt;
	int kind;
	int flags;
	const struct scan_sect *sect; /* wanted if rewritten */
	size_t nsect;
	const char *user, *client, *policy;
	const uint8_t *data;
	size_t len;
	struct mime_msg msg;
	struct av_engine *engine;
	struct av_limits lim;
	struct timespec t0;
	struct timespec deadline; /* max_scan_time for the whole message */
	int out_of_time;
	struct av_result whole; /* the whole message's scan */
	struct scan_find find[SCAN_MAX_FINDINGS];
	size_t nfind, more, nvirus, nerror;
	int oversize;
	int action; /* ACT_* decided: the most severe */
	int msg_action; /* ACT_ALLOW, _LOCK, _DENY, _DROP, _BLOCK */
	int tag, header; /* spam: category to tag / to put in a header */
	double spam_score;
	char type[16]; /* %(type)% */
	/* While a leaf is judged. */
	const struct mime_part *leaf;
	struct scan_apt_hit apt[SCAN_MAX_APT_PENDING];
	size_t napt, moreapt;
};

static const char *const scan_verdicts[] = {
    [SCAN_CLEAN] = "clean",
    [SCAN_CHANGED] = "changed",
    [SCAN_REJECT] = "reject",
    [SCAN_DROP] = "drop",
    [SCAN_ERROR] = "error",
};

static uint8_t scan_lock_key[32];
static int scan_have_key;

const char *
scan_verdict_name(int v)
{
	if (v < 0 || v > SCAN_ERROR)
		return "unknown";
	return scan_verdicts[v];
}

static const char *
scan_kind_name(int kind)
{
	return kind == SCAN_APPEND ? "append" : "fetch";
}

/* allow < header < tag < strip < lock < deny < drop < block */
static int
scan_severity(int act)
{
	switch (act) {
	case ACT_ALLOW:
		return 0;
	case ACT_HEADER:
		return 1;
	case ACT_TAG:
		return 2;
	case ACT_STRIP:
		return 3;
	case ACT_LOCK:
		return 4;
	case ACT_DENY:
		return 5;
	case ACT_DROP:
		return 6;
	default:
		return 7; /* block */
	}
}

static int
scan_worse(int a, int b)
{
	return scan_severity(a) >= scan_severity(b) ? a : b;
}

static void
scan_res_init(struct scan_res *res)
{
	memset(res, 0, sizeof(*res));
	res->verdict = SCAN_CLEAN;
	res->action = ACT_ALLOW;
	res->fd = -1;
}

void
scan_res_clear(struct scan_res *res)
{
	if (res->fd != -1)
		close(res->fd);
	res->fd = -1;
}

/* ASCII without control characters: the reason may end up in a tagged
 * NO and in logs. */
static void
scan_ascii(char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
			*s = '?';
}

void
scan_set_lock_key(const uint8_t *key)
{
	if (key == NULL) {
		explicit_bzero(scan_lock_key, sizeof(scan_lock_key));
		scan_have_key = 0;
		return;
	}
	memcpy(scan_lock_key, key, sizeof(scan_lock_key));
	scan_have_key = 1;
}

static int
scan_rules_lock(const struct cfg_rules *r)
{
	size_t i;

	if (r->none_matched == ACT_LOCK)
		return 1;
	for (i = 0; i < r->nrules; i++)
		if (r->rules[i].action == ACT_LOCK)
			return 1;
	return 0;
}

/* Can the action lock a part or a message? */
static int
scan_action_locks(const struct cfg_action *a)
{
	int i;

	if (scan_rules_lock(&a->content_types) ||
	    scan_rules_lock(&a->filenames))
		return 1;
	if (a->antivirus.enabled && (a->antivirus.on_virus == ACT_LOCK ||
	                                a->antivirus.on_error == ACT_LOCK))
		return 1;
	/* Any scan error (an encrypted archive) gets on_error. */
	if (a->antivirus.on_error == ACT_LOCK)
		return 1;
	for (i = 0; a->apt_blocker.enabled && i < APT_NLEVEL; i++)
		if (a->apt_blocker.actions[i] == ACT_LOCK)
			return 1;
	return 0;
}

/*
 * The compiled rules, APT database and spam engine of an action.
 */

static void
scan_rt_free(struct scan_rt *rt)
{
	if (rt == NULL)
		return;
	rules_free(rt->ct);
	rules_free(rt->fn);
	rules_free(rt->hdr);
	apt_db_free(rt->apt);
	spam_engine_free(rt->spam);
	free(rt);
}

static struct scan_rt *
scan_rt_new(const struct cfg_action *a, char *err, size_t errlen)
{
	struct scan_rt *rt;
	char why[400];

	if ((rt = calloc(1, sizeof(*rt))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if ((rt->ct = rules_compile(&a->content_types, why, sizeof(why))) ==
	    NULL) {
		snprintf(err, errlen, "content_types: %s", why);
		goto fail;
	}
	if ((rt->fn = rules_compile(&a->filenames, why, sizeof(why))) == NULL) {
		snprintf(err, errlen, "filenames: %s", why);
		goto fail;
	}
	if ((rt->hdr = rules_compile(&a->headers, why, sizeof(why))) == NULL) {
		snprintf(err, errlen, "headers: %s", why);
		goto fail;
	}
	if (a->apt_blocker.enabled &&
	    (rt->apt = apt_db_parse(a->apt_blocker.data != NULL
	                                ? (const void *)a->apt_blocker.data
	                                : "",
	         a->apt_blocker.len, why, sizeof(why))) == NULL) {
		snprintf(err, errlen, "apt_blocker database %s: %s",
		    a->apt_blocker.database, why);
		goto fail;
	}
	if (a->spamblocker.enabled &&
	    (rt->spam = spam_engine_new(&a->spamblocker, why, sizeof(why))) ==
	        NULL) {
		snprintf(err, errlen, "spamblocker: %s", why);
		goto fail;
	}
	return rt;
fail:
	scan_rt_free(rt);
	return NULL;
}

/* The runtime of every action of the config scand serves, built once per
 * configuration (a reload brings a new one). */
static struct {
	uint32_t generation;
	struct scan_rt **rt;
	size_t n;
} scan_rts;

static void
scan_rts_clear(void)
{
	size_t i;

	for (i = 0; i < scan_rts.n; i++)
		scan_rt_free(scan_rts.rt[i]);
	free(scan_rts.rt);
	memset(&scan_rts, 0, sizeof(scan_rts));
}

/* The runtime of action idx of cfg, or NULL with err set. */
static const struct scan_rt *
scan_rt_get(const struct config *cfg, size_t idx, char *err, size_t errlen)
{
	/* Keyed by generation, not by pointer: a scand worker forked from
	 * the loader gets its own copy of the same configuration, and
	 * shares the loader's compiled rules and APT database.  What is
	 * compiled holds no pointer into the configuration. */
	if (scan_rts.rt == NULL || scan_rts.generation != cfg->generation ||
	    scan_rts.n != cfg->nactions) {
		scan_rts_clear();
		if ((scan_rts.rt = calloc(
		         cfg->nactions, sizeof(*scan_rts.rt))) == NULL) {
			snprintf(err, errlen, "out of memory");
			return NULL;
		}

		scan_rts.generation = cfg->generation;
		scan_rts.n = cfg->nactions;
	}
	if (idx >= scan_rts.n) {
		snprintf(err, errlen, "no action %zu", idx);
		return NULL;
	}
	if (scan_rts.rt[idx] == NULL)
		scan_rts.rt[idx] = scan_rt_new(&cfg->actions[idx], err, errlen);
	return scan_rts.rt[idx];
}

void
scan_config_release(struct config *cfg)
{
	size_t i;

	if (scan_rts.rt == NULL || scan_rts.generation != cfg->generation ||
	    scan_rts.n != cfg->nactions)
		return;
	for (i = 0; i < cfg->nactions; i++) {
		if (scan_rts.rt[i] == NULL)
			continue;
		free(cfg->actions[i].apt_blocker.data);
		cfg->actions[i].apt_blocker.data = NULL;
		free(cfg->actions[i].spamblocker.rules_data);
		cfg->actions[i].spamblocker.rules_data = NULL;
	}
}

int
scan_config_check(const struct config *cfg, struct buf *errs)
{
	struct scan_rt *rt;
	char err[512];
	size_t i;
	int bad = 0;

	for (i = 0; i < cfg->nactions; i++) {
		if (!cfg->actions[i].used)
			continue;
		if ((rt = scan_rt_new(&cfg->actions[i], err, sizeof(err))) ==
		    NULL) {
			buf_printf(errs, "%s: action '%s': %s\n", cfg->file,
			    cfg->actions[i].name, err);
			bad = 1;
		}
		scan_rt_free(rt);
	}
	return bad ? -1 : 0;
}

/*
 * Findings.
 */

static struct scan_find *
scan_add(
    struct scan_job *j, int stage, int action, const struct mime_part *part)
{
	struct scan_find *f;

	if (stage == ST_AV)
		j->nvirus++;
	else if (stage == ST_ERROR)
		j->nerror++;
	if (j->nfind == SCAN_MAX_FINDINGS) {
		j->more++;
		/* What is not kept still counts: the worst action of the
		 * findings not kept applies to the whole message. */
		if (action != ACT_ALLOW && action != ACT_TAG &&
		    action != ACT_HEADER)
			j->msg_action = scan_worse(j->msg_action,
			    action == ACT_STRIP || action == ACT_LOCK ? ACT_DENY
			                                              : action);
		return NULL;
	}
	f = &j->find[j->nfind++];
	memset(f, 0, sizeof(*f));
	f->stage = stage;
	f->action = action;
	f->log = 1;
	f->category = -1;
	f->part = part;
	if (part != NULL) {
		mime_section(part, f->section, sizeof(f->section));
		mime_filename(&j->msg, part, f->filename, sizeof(f->filename));
	}
	return f;
}

static void
scan_add_error(struct scan_job *j, const struct mime_part *part,
    const char *member, const char *why)
{
	struct scan_find *f;

	f = scan_add(j, ST_ERROR, j->act->antivirus.on_error, part);
	if (f == NULL)
		return;
	snprintf(f->what, sizeof(f->what), "%s", why);
	if (member != NULL)
		snprintf(f->member, sizeof(f->member), "%s", member);
}

/* "part 2 (a.exe)", "member x/y.exe of part 2 (a.zip)", "the message" */
static void
scan_where(const struct scan_find *f, char *out, size_t len)
{
	char part[384];

	if (f->section[0] == '\0')
		snprintf(part, sizeof(part), "the message");
	else if (f->filename[0] != '\0')
		snprintf(part, sizeof(part), "part %.60s (%.200s)", f->section,
		    f->filename);
	else
		snprintf(part, sizeof(part), "part %.60s", f->section);
	if (f->member[0] != '\0')
		snprintf(out, len, "member %.200s of %.300s", f->member, part);
	else
		snprintf(out, len, "%.380s", part);
}

static void
scan_find_text(const struct scan_find *f, char *out, size_t len)
{
	char where[700];

	scan_where(f, where, sizeof(where));
	switch (f->stage) {
	case ST_HEADER:
		snprintf(out, len, "header rule %.120s matched %.160s", f->what,
		    f->subject);
		break;
	case ST_CTYPE:
		snprintf(out, len,
		    "content type rule %.120s matched %.100s in %.520s",
		    f->what, f->subject, where);
		break;
	case ST_FILENAME:
		snprintf(out, len,
		    "file name rule %.120s matched %.200s in %.520s", f->what,
		    f->subject, where);
		break;
	case ST_AV:
		snprintf(out, len, "virus %.128s in %.520s", f->what, where);
		break;
	case ST_APT:
		snprintf(out, len, "APT threat %.128s (%s) in %.520s", f->what,
		    scan_levels[f->level], where);
		break;
	case ST_SPAM:
		if (f->category >= 0)
			snprintf(out, len, "spam %s (score %.1f)",
			    scan_cats[f->category], f->score);
		else
			snprintf(out, len, "spamBlocker unavailable: %.200s",
			    f->what);
		break;
	default:
		snprintf(
		    out, len, "scan error in %.520s: %.250s", where, f->what);
		break;
	}
}

static void
scan_reason(const struct scan_job *j, char *out, size_t len)
{
	char one[1024];
	size_t i, n;

	out[0] = '\0';
	if (j->oversize) {
		snprintf(out, len,
		    "message of %zu bytes is larger than max_email_size "
		    "(%llu bytes)",
		    j->len, (unsigned long long)j->act->general.max_email_size);
		return;
	}
	for (i = 0; i < j->nfind; i++) {
		scan_find_text(&j->find[i], one, sizeof(one));
		n = strlen(out);
		snprintf(out + n, len - n, "%s%s", n ? "; " : "", one);
	}
	if (j->more) {
		n = strlen(out);
		snprintf(
		    out + n, len - n, "%s%zu more", n ? "; " : "", j->more);
	}
}

/*
 * Time.
 */

/* Milliseconds left of the message's max_scan_time (<= 0: none). */
static long long
scan_ms_left(const struct scan_job *j)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (long long)(j->deadline.tv_sec - now.tv_sec) * 1000 +
	       (j->deadline.tv_nsec - now.tv_nsec) / 1000000;
}

static int
scan_timed_out(struct scan_job *j)
{
	if (!j->out_of_time && scan_ms_left(j) <= 0)
		j->out_of_time = 1;
	return j->out_of_time;
}

static void
scan_set_deadline(struct scan_job *j, uint64_t ms)
{
	clock_gettime(CLOCK_MONOTONIC, &j->deadline);
	j->deadline.tv_sec += (time_t)(ms / 1000);
	j->deadline.tv_nsec += (long)(ms % 1000) * 1000000;
	if (j->deadline.tv_nsec >= 1000000000) {
		j->deadline.tv_sec++;
		j->deadline.tv_nsec -= 1000000000;
	}
}

/*
 * 1. Header rules, on the fields of the message's own header.
 */

static void
scan_headers(struct scan_job *j)
{
	const struct mime_part *root = j->msg.root;
	const struct cfg_rules *cr = &j->act->headers;
	const struct mime_field *fl;
	const struct cfg_rule *rule;
	struct scan_find *f;
	struct buf line;
	const char *subj[1];
	char *v;
	size_t i;
	int r, act;

	if (root == NULL || (cr->nrules == 0 && cr->none_matched == ACT_ALLOW))
		return;
	buf_init(&line, 0);
	for (i = 0; i < root->nfields; i++) {
		fl = &root->fields[i];
		if ((v = mime_field_value(&j->msg, fl)) == NULL) {
			scan_add_error(j, NULL, NULL, "out of memory");
			break;
		}
		buf_reset(&line);
		buf_add(&line, j->data + fl->off, fl->name_len);
		buf_printf(&line, ": %s", v);
		buf_add_u8(&line, 0);
		free(v);
		subj[0] = (const char *)line.data;
		r = rules_match(j->rt->hdr, subj, 1);
		if (r == -2) {
			scan_add_error(
			    j, NULL, NULL, "a header rule hit its match limit");
			continue;
		}
		rule = r >= 0 ? &cr->rules[r] : NULL;
		act = rule != NULL ? rule->action : cr->none_matched;
		if (rule == NULL && act == ACT_ALLOW)
			continue;
		if ((f = scan_add(j, ST_HEADER, act, NULL)) == NULL)
			continue;
		f->field = i;
		snprintf(f->what, sizeof(f->what), "%s",
		    rule != NULL ? rule->name : "none_matched");
		snprintf(f->subject, sizeof(f->subject), "%s",
		    (const char *)line.data);
		if (rule != NULL) {
			f->alarm = rule->alarm;
			f->log = rule->log;
		}
	}
	buf_free(&line);
}

/*
 * 2. Content types and file names, of a leaf and of archive members.
 */

/* One rule set on its subjects: add the finding, if any. */
static void
scan_rule(struct scan_job *j, int stage, const struct rule_set *rs,
    const struct cfg_rules *cr, const char *const *subj, size_t n,
    const char *member, const char *type, const char *detected)
{
	const struct cfg_rule *rule;
	struct scan_find *f;
	int r, act;

	r = rules_match(rs, subj, n);
	if (r == -2) {
		scan_add_error(j, j->leaf, member,
		    stage == ST_CTYPE
		        ? "a content type rule hit its match limit"
		        : "a file name rule hit its match limit");
		return;
	}
	rule = r >= 0 ? &cr->rules[r] : NULL;
	act = rule != NULL ? rule->action : cr->none_matched;
	if (rule == NULL && act == ACT_ALLOW)
		return;
	if ((f = scan_add(j, stage, act, j->leaf)) == NULL)
		return;
	snprintf(f->what, sizeof(f->what), "%s",
	    rule != NULL ? rule->name : "none_matched");
	if (rule != NULL) {
		f->alarm = rule->alarm;
		f->log = rule->log;
		/* The subject that matched: the declared type first. */
		snprintf(f->subject, sizeof(f->subject), "%s", subj[0]);
		if (n > 1 && rules_match(rs, subj, 1) != r)
			snprintf(f->subject, sizeof(f->subject), "%s", subj[1]);
	} else
		snprintf(f->subject, sizeof(f->subject), "%s", subj[0]);
	if (member != NULL)
		snprintf(f->member, sizeof(f->member), "%s", member);
	if (type != NULL)
		snprintf(f->type, sizeof(f->type), "%s", type);
	if (detected != NULL)
		snprintf(f->detected, sizeof(f->detected), "%s", detected);
}

static void
scan_ctype(struct scan_job *j, const void *data, size_t len,
    const char *declared, const char *member)
{
	const struct cfg_rules *cr = &j->act->content_types;
	const char *subj[2];
	char detected[96] = "";
	size_t n = 0;

	if (cr->nrules == 0 && cr->none_matched == ACT_ALLOW)
		return;
	if (declared != NULL)
		subj[n++] = declared;
	/* A part that says it is text and is text keeps its type: what
	 * libmagic would tell is another text type, at a millisecond
	 * a part (its text tests compile their regular expressions on
	 * every call). */
	if ((cr->auto_detect || declared == NULL) &&
	    !(declared != NULL && strncmp(declared, "text/", 5) == 0 &&
	        detect_is_text(data, len))) {
		detect_type(data, len, detected, sizeof(detected));
		if (declared == NULL || strcasecmp(declared, detected) != 0)
			subj[n++] = detected;
	}
	if (n == 0)
		return;
	scan_rule(j, ST_CTYPE, j->rt->ct, cr, subj, n, member, declared,
	    detected[0] != '\0' ? detected : NULL);
}

static void
scan_fname(struct scan_job *j, const char *name, const char *member)
{
	const struct cfg_rules *cr = &j->act->filenames;
	const char *subj[1];

	if (name[0] == '\0' ||
	    (cr->nrules == 0 && cr->none_matched == ACT_ALLOW))
		return;
	subj[0] = name;
	scan_rule(j, ST_FILENAME, j->rt->fn, cr, subj, 1, member, NULL, NULL);
}

static void
scan_apt_hold(
    struct scan_job *j, const void *data, size_t len, const char *member)
{
	struct scan_apt_hit *h;
	struct apt_hit hit;
	int r;

	if (j->rt->apt == NULL || apt_db_count(j->rt->apt) == 0)
		return;
	r = apt_lookup(j->rt->apt, data, len, &hit);
	if (r == -1) {
		scan_add_error(j, j->leaf, member, "APT Blocker cannot hash");
		return;
	}
	if (r == 0)
		return;
	if (j->napt == SCAN_MAX_APT_PENDING) {
		j->moreapt++;
		return;
	}
	h = &j->apt[j->napt++];
	h->hit = hit;
	snprintf(h->member, sizeof(h->member), "%s", member ? member : "");
}

static int
scan_member(void *arg, const struct arc_member *m)
{
	struct scan_job *j = arg;
	const char *base;

	if (scan_timed_out(j))
		return -1;
	if (j->act->content_types.archives)
		scan_ctype(j, m->data, m->len, NULL, m->name);
	if (j->act->filenames.archives) {
		base = strrchr(m->name, '/');
		scan_fname(j, base != NULL ? base + 1 : m->name, m->name);
	}
	scan_apt_hold(j, m->data, m->len, m->name);
	return 0;
}

static void
scan_archive(struct scan_job *j, const void *data, size_t len)
{
	const struct cfg_action *a = j->act;
	char err[512] = "";
	int r;

	if (!(a->content_types.archives &&
	        (a->content_types.nrules > 0 ||
	            a->content_types.none_matched != ACT_ALLOW)) &&
	    !(a->filenames.archives &&
	        (a->filenames.nrules > 0 ||
	            a->filenames.none_matched != ACT_ALLOW)) &&
	    (j->rt->apt == NULL || apt_db_count(j->rt->apt) == 0))
		return;
	if (a->general.max_archive_depth == 0)
		return;
	r = arc_walk(data, len, (int)a->general.max_archive_depth,
	    a->antivirus.max_file_size, a->antivirus.max_files, scan_member, j,
	    err, sizeof(err));
	if (j->out_of_time) {
		scan_add_error(j, j->leaf, NULL,
		    "max_scan_time reached while reading an archive");
		return;
	}
	switch (r) {
	case ARC_ENCRYPTED:
		scan_add_error(j, j->leaf, NULL,
		    err[0] ? err : "encrypted archive member");
		break;
	case ARC_LIMIT:
		scan_add_error(
		    j, j->leaf, NULL, err[0] ? err : "archive limit reached");
		break;
	case ARC_ERROR:
		scan_add_error(
		    j, j->leaf, NULL, err[0] ? err : "corrupt archive");
		break;
	default:
		break;
	}
}

/*
 * 3. Antivirus, with what is left of the time limit: the limit holds for
 * the message, not for each of its parts, so that netd's timeout
 * (max_scan_time and a grace) is never reached by a slow many-part
 * message.
 */
static void
scan_av(struct scan_job *j, const void *data, size_t len, struct av_result *r)
{
	long long left = scan_ms_left(j);

	if (j->out_of_time || left <= 0) {
		j->out_of_time = 1;
		memset(r, 0, sizeof(*r));
		r->status = AV_ERROR;
		snprintf(r->error, sizeof(r->error),
		    "max_scan_time (%llu ms) reached",
		    (unsigned long long)j->act->antivirus.max_scan_time_ms);
		return;
	}
	j->lim.max_scan_time_ms = (uint64_t)left;
	av_scan(j->engine, &j->lim, data, len, r);
}

/* 4. The APT hits of a part antivirus found clean. */
static void
scan_apt_flush(struct scan_job *j, int av_clean)
{
	const struct cfg_apt *apt = &j->act->apt_blocker;
	struct scan_apt_hit *h;
	struct scan_find *f;
	size_t i;

	for (i = 0; av_clean && i < j->napt; i++) {
		h = &j->apt[i];
		f = scan_add(j, ST_APT, apt->actions[h->hit.level], j->leaf);
		if (f == NULL)
			continue;
		f->level = h->hit.level;
		snprintf(f->what, sizeof(f->what), "%s", h->hit.name);
		snprintf(f->sha256, sizeof(f->sha256), "%s", h->hit.sha256);
		snprintf(f->md5, sizeof(f->md5), "%s", h->hit.md5);
		snprintf(f->member, sizeof(f->member), "%s", h->member);
	}
	if (av_clean && j->moreapt > 0)
		scan_add_error(
		    j, j->leaf, NULL, "too many APT Blocker hits in one part");
	j->napt = j->moreapt = 0;
}

static void
scan_leaf(struct scan_job *j, const struct mime_part *part)
{
	const struct cfg_antivirus *av = &j->act->antivirus;
	struct av_result r;
	struct scan_find *f;
	struct buf body;
	char type[48], sub[48], declared[96], name[256];
	int clean = 1;

	j->leaf = part;
	j->napt = j->moreapt = 0;
	buf_init(&body, 0);
	if (mime_decode_body(&j->msg, part, &body) == -1) {
		scan_add_error(j, part, NULL, "cannot decode the part");
		buf_free(&body);
		return;
	}
	mime_content_type(&j->msg, part, type, sizeof(type), sub, sizeof(sub));
	snprintf(declared, sizeof(declared), "%s/%s", type, sub);
	mime_filename(&j->msg, part, name, sizeof(name));
	/* 2. */
	scan_ctype(j, body.data, body.len, declared, NULL);
	scan_fname(j, name, NULL);
	/* APT Blocker judges files: attachments, anything but text, and
	 * archive members; not the text of a message. */
	if (name[0] != '\0' || strcmp(type, "text") != 0)
		scan_apt_hold(j, body.data, body.len, NULL);
	scan_archive(j, body.data, body.len);
	/* 3., part by part only when the whole message was not clean:
	 * to tell which part a finding is in. */
	if (av->enabled && j->engine != NULL && j->whole.status != AV_CLEAN) {
		scan_av(j, body.data, body.len, &r);
		if (r.status == AV_VIRUS) {
			clean = 0;
			if ((f = scan_add(j, ST_AV, av->on_virus, part)) !=
			    NULL)
				snprintf(
				    f->what, sizeof(f->what), "%s", r.virus);
		} else if (r.status == AV_ERROR) {
			clean = 0;
			scan_add_error(j, part, NULL, r.error);
		}
	}
	/* 4. */
	scan_apt_flush(j, clean);
	buf_free(&body);
	j->leaf = NULL;
}

static void
scan_parts(struct scan_job *j, const struct mime_part *part)
{
	const struct mime_part *c;

	/* A multipart without parts (no boundary) is judged as a leaf. */
	if (part->kind == MIME_LEAF || part->children == NULL) {
		/* Once out of time, one error says it for all parts. */
		if (!scan_timed_out(j))
			scan_leaf(j, part);
		return;
	}
	for (c = part->children; c != NULL; c = c->next)
		scan_parts(j, c);
}

/*
 * The whole message as libclamav sees it.  libclamav parses mail itself
 * (as clamd does for a mail file), so a clean message is clean for
 * antivirus without scanning its parts again; a message that is not is
 * scanned part by part (scan_leaf) to find the part to strip or lock.  A
 * virus or an error that no part shows is the message's.
 */
static void
scan_whole_first(struct scan_job *j)
{
	scan_av(j, j->data, j->len, &j->whole);
}

static void
scan_whole_last(struct scan_job *j, size_t nvirus, size_t nerror)
{
	struct scan_find *f;

	if (j->whole.status == AV_VIRUS && j->nvirus == nvirus &&
	    (f = scan_add(j, ST_AV, j->act->antivirus.on_virus, NULL)) != NULL)
		snprintf(f->what, sizeof(f->what), "%s", j->whole.virus);
	else if (j->whole.status == AV_ERROR && j->nerror == nerror &&
	         j->nvirus == nvirus)
		scan_add_error(j, NULL, NULL, j->whole.error);
}

/* A rewritten message, scanned whole. */
static void
scan_whole(struct scan_job *j, const void *data, size_t len, int known)
{
	struct av_result r;
	struct scan_find *f;

	scan_av(j, data, len, &r);
	if (r.status == AV_VIRUS && !known &&
	    (f = scan_add(j, ST_AV, j->act->antivirus.on_virus, NULL)) != NULL)
		snprintf(f->what, sizeof(f->what), "%s", r.virus);
	else if (r.status == AV_ERROR)
		scan_add_error(j, NULL, NULL, r.error);
}

/* 5. spamBlocker. */
static void
scan_spam(struct scan_job *j)
{
	const struct cfg_spam *sp = &j->act->spamblocker;
	struct spam_result r;
	struct scan_find *f;

	if (j->rt->spam == NULL || j->kind == SCAN_APPEND)
		return;
	spam_check(j->rt->spam, j->data, j->len, &r);
	if (r.status == SPAM_UNAVAILABLE) {
		if ((f = scan_add(j, ST_SPAM, sp->on_unavailable, NULL)) !=
		    NULL)
			snprintf(f->what, sizeof(f->what), "%s", r.detail);
		return;
	}
	if (r.status != SPAM_OK || r.category < 0 || r.category >= SPAM_NCAT)
		return;
	j->spam_score = r.score;
	if ((f = scan_add(j, ST_SPAM, sp->cat[r.category].action, NULL)) ==
	    NULL)
		return;
	f->category = r.category;
	f->score = r.score;
	snprintf(f->what, sizeof(f->what), "%s", scan_cats[r.category]);
	snprintf(f->subject, sizeof(f->subject), "%s", r.detail);
}

/*
 * Deciding.
 */

/* The part a strip or lock replaces: a leaf in a multipart, or the
 * message/rfc822 part around an infected message body.  NULL if it is
 * the body of the message itself. */
static const struct mime_part *
scan_target(const struct mime_part *p)
{
	if (p == NULL)
		return NULL;
	while (p->parent != NULL && p->parent->kind == MIME_MESSAGE)
		p = p->parent;
	if (p->parent == NULL || p->parent->kind != MIME_MULTIPART)
		return NULL;
	return p;
}

static const char *
scan_type_name(int stage)
{
	switch (stage) {
	case ST_AV:
		return "virus";
	case ST_CTYPE:
		return "content_type";
	case ST_FILENAME:
		return "filename";
	default:
		return scan_stages[stage];
	}
}

static void
scan_decide(struct scan_job *j)
{
	const struct scan_find *f, *worst = NULL;
	size_t i;
	int a;

	j->tag = j->header = -1;
	for (i = 0; i < j->nfind; i++) {
		f = &j->find[i];
		a = f->action;
		if (worst == NULL ||
		    scan_severity(a) > scan_severity(worst->action))
			worst = f;
		switch (a) {
		case ACT_STRIP:
			/* A stripped header field is an edit of the header. */
			if (f->stage != ST_HEADER &&
			    scan_target(f->part) == NULL)
				j->msg_action =
				    scan_worse(j->msg_action, ACT_DENY);
			break;
		case ACT_LOCK:
			if (scan_target(f->part) == NULL)
				j->msg_action =
				    scan_worse(j->msg_action, ACT_LOCK);
			break;
		case ACT_DENY:
		case ACT_DROP:
		case ACT_BLOCK:
			j->msg_action = scan_worse(j->msg_action, a);
			break;
		case ACT_TAG:
			j->tag = f->category;
			break;
		case ACT_HEADER:
			j->header = f->category;
			break;
		default:
			break;
		}
	}
	j->action = scan_worse(
	    worst != NULL ? worst->action : ACT_ALLOW, j->msg_action);
	if (worst != NULL && worst->action != ACT_ALLOW)
		snprintf(j->type, sizeof(j->type), "%s",
		    scan_type_name(worst->stage));
	else if (j->nerror > 0)
		snprintf(j->type, sizeof(j->type), "error");
}

/*
 * The deny message text, with its variables.
 */

static void
scan_var(struct buf *o, const char *name, size_t nlen, const char *reason,
    const struct scan_find *f, const struct scan_job *j)
{
	const char *v = NULL;
	char tmp[512];

#define IS(s) (nlen == strlen(s) && strncmp(name, s, nlen) == 0)
	if (IS("reason"))
		v = reason;
	else if (IS("virus"))
		v = f != NULL && (f->stage == ST_AV || f->stage == ST_APT)
		        ? f->what
		        : "";
	else if (IS("filename")) {
		v = "";
		if (f != NULL && f->member[0] != '\0')
			v = f->member;
		else if (f != NULL)
			v = f->filename;
	} else if (IS("action"))
		v = action_name(f != NULL ? f->action : j->action);
	else if (IS("type"))
		v = f != NULL ? scan_type_name(f->stage) : j->type;
	else if (IS("recovery")) {
		v = "";
		if (f != NULL && f->action == ACT_LOCK) {
			snprintf(tmp, sizeof(tmp),
			    "The attachment was locked; your administrator "
			    "can unlock %s%s.",
			    f->filename[0] ? f->filename : "it",
			    f->filename[0] ? LOCK_SUFFIX : "");
			v = tmp;
		}
	}
#undef IS
	if (v != NULL)
		buf_add(o, v, strlen(v));
	else {
		buf_add(o, "%(", 2);
		buf_add(o, name, nlen);
		buf_add(o, ")%", 2);
	}
}

/* The action's deny message with variables filled in and the message's
 * own line ends, ending with a line end. */
static void
scan_deny_text(struct buf *o, const struct scan_job *j, const char *reason,
    const struct scan_find *f)
{
	const char *t = j->act->deny_message, *end, *eol = j->msg.eol;
	size_t start = o->len;

	if (eol == NULL)
		eol = "\r\n";
	for (; *t != '\0'; t++) {
		if (t[0] == '%' && t[1] == '(' &&
		    (end = strstr(t + 2, ")%")) != NULL &&
		    memchr(t + 2, '\n', (size_t)(end - t - 2)) == NULL) {
			scan_var(o, t + 2, (size_t)(end - t - 2), reason, f, j);
			t = end + 1;
		} else if (*t == '\n' &&
		           (t == j->act->deny_message || t[-1] != '\r'))
			buf_add(o, eol, strlen(eol));
		else if (*t == '\r' && t[1] != '\n')
			continue;
		else
			buf_add_u8(o, (uint8_t)*t);
	}
	if (o->len == start || o->data[o->len - 1] != '\n')
		buf_add(o, eol, strlen(eol));
}

static int
scan_is_8bit(const struct buf *b, size_t from)
{
	size_t i;

	for (i = from; i < b->len; i++)
		if (b->data[i] >= 0x80)
			return 1;
	return 0;
}

static const char *
scan_eol(const struct scan_job *j)
{
	return j->msg.eol != NULL ? j->msg.eol : "\r\n";
}

/* Content-Type and Content-Transfer-Encoding of a deny text, then the
 * empty line and the text. */
static void
scan_text_part(struct buf *o, const struct scan_job *j, const char *reason,
    const struct scan_find *f)
{
	const char *eol = scan_eol(j);
	struct buf text;

	buf_init(&text, 0);
	scan_deny_text(&text, j, reason, f);
	buf_printf(o, "Content-Type: text/plain; charset=utf-8%s", eol);
	buf_printf(o, "Content-Transfer-Encoding: %s%s%s",
	    scan_is_8bit(&text, 0) ? "8bit" : "7bit", eol, eol);
	buf_add(o, text.data, text.len);
	buf_free(&text);
}

/*
 * Rewriting.
 */

/* The fields a deny message keeps: the envelope, and the threading. */
static int
scan_keep_field(const struct mime_msg *m, const struct mime_field *f)
{
	static const char *const keep[] = {"Date", "From", "Sender", "Reply-To",
	    "To", "Cc", "Bcc", "Subject", "Message-ID", "In-Reply-To",
	    "References", NULL};
	size_t i;

	for (i = 0; keep[i] != NULL; i++)
		if (f->name_len == strlen(keep[i]) &&
		    strncasecmp((const char *)m->data + f->off, keep[i],
		        f->name_len) == 0)
			return 1;
	return 0;
}

static void
scan_kept_fields(const struct scan_job *j, struct buf *o)
{
	const struct mime_part *root = j->msg.root;
	const struct mime_field *f;
	const char *eol = scan_eol(j);
	size_t i;

	for (i = 0; root != NULL && i < root->nfields; i++) {
		f = &root->fields[i];
		if (!scan_keep_field(&j->msg, f))
			continue;
		buf_add(o, j->data + f->off, f->end - f->off);
		if (j->data[f->end - 1] != '\n')
			buf_add(o, eol, strlen(eol));
	}
	buf_printf(o, "MIME-Version: 1.0%s", eol);
}

/* The finding a deny message talks about: the worst one. */
static const struct scan_find *
scan_main_find(const struct scan_job *j)
{
	const struct scan_find *w = NULL;
	size_t i;

	for (i = 0; i < j->nfind; i++)
		if (w == NULL ||
		    scan_severity(j->find[i].action) > scan_severity(w->action))
			w = &j->find[i];
	return w;
}

static void
scan_build_deny(struct scan_job *j, const char *reason, struct buf *o)
{
	scan_kept_fields(j, o);
	scan_text_part(o, j, reason, scan_main_find(j));
}

/* A file name as a MIME parameter: quoted if it is plain ASCII, else
 * RFC 2231 (name*=UTF-8''...). */
static void
scan_param(struct buf *o, const char *param, const char *v)
{
	const unsigned char *p;
	int plain = 1;

	for (p = (const unsigned char *)v; *p != '\0'; p++)
		if (*p < 0x20 || *p >= 0x7f || *p == '"' || *p == '\\')
			plain = 0;
	if (plain) {
		buf_printf(o, "%s=\"%s\"", param, v);
		return;
	}
	buf_printf(o, "%s*=UTF-8''", param);
	for (p = (const unsigned char *)v; *p != '\0'; p++) {
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || strchr("!#$&+-.^_`|~", *p))
			buf_add_u8(o, *p);
		else
			buf_printf(o, "%%%02X", *p);
	}
}

/* A locked part: the wrapper of data as a base64 attachment.  No line
 * end after the last base64 line. */
static int
scan_locked_part(const struct scan_job *j, const char *filename,
    const char *ctype, const void *data, size_t len, struct buf *o)
{
	const char *eol = scan_eol(j);
	struct buf blob;
	char name[300];
	unsigned char line[80];
	size_t off, n;

	if (!scan_have_key)
		return -1;
	buf_init(&blob, 0);
	if (lock_seal(scan_lock_key, filename, ctype, data, len, &blob) == -1) {
		buf_free(&blob);
		return -1;
	}
	snprintf(name, sizeof(name), "%s%s", filename, LOCK_SUFFIX);
	buf_printf(o, "Content-Type: %s; ", LOCK_CTYPE);
	scan_param(o, "name", name);
	buf_printf(o, "%sContent-Disposition: attachment; ", eol);
	scan_param(o, "filename", name);
	buf_printf(o, "%sContent-Transfer-Encoding: base64%s%s", eol, eol, eol);
	for (off = 0; off < blob.len; off += n) {
		n = blob.len - off > 57 ? 57 : blob.len - off;
		EVP_EncodeBlock(line, blob.data + off, (int)n);
		if (off > 0)
			buf_add(o, eol, strlen(eol));
		buf_add(o, line, strlen((char *)line));
	}
	buf_free(&blob);
	return 0;
}

/* Lock the part target (a leaf, or a message/rfc822 part). */
static int
scan_lock_part(
    const struct scan_job *j, const struct mime_part *t, struct buf *o)
{
	char name[256], type[48], sub[48], ctype[100], sect[64];
	struct buf body;
	int r;

	mime_filename(&j->msg, t, name, sizeof(name));
	mime_content_type(&j->msg, t, type, sizeof(type), sub, sizeof(sub));
	snprintf(ctype, sizeof(ctype), "%s/%s", type, sub);
	if (name[0] == '\0') {
		mime_section(t, sect, sizeof(sect));
		snprintf(name, sizeof(name), "part-%s%s", sect,
		    t->kind == MIME_MESSAGE ? ".eml" : "");
	}
	buf_init(&body, 0);
	if (t->kind == MIME_MESSAGE)
		r = buf_add(
		    &body, j->data + t->body_off, t->body_end - t->body_off);
	else
		r = mime_decode_body(&j->msg, t, &body);
	if (r != -1)
		r = scan_locked_part(j, name, ctype, body.data, body.len, o);
	buf_free(&body);
	return r;
}

/* The whole message locked: the kept fields, the deny text, and the
 * original as a locked attachment.  The boundary comes from the
 * message's hash: the same message gives the same bytes. */
static int
scan_build_msg_lock(struct scan_job *j, const char *reason, struct buf *o)
{
	const char *eol = scan_eol(j);
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	char bound[64];
	int r;

	if (!scan_have_key)
		return -1;
	if (EVP_Digest(j->data, j->len, md, &mdlen, EVP_sha256(), NULL) != 1)
		return -1;
	snprintf(bound, sizeof(bound),
	    "imapgw-locked-%02x%02x%02x%02x%02x%02x%02x%02x", md[0], md[1],
	    md[2], md[3], md[4], md[5], md[6], md[7]);
	scan_kept_fields(j, o);
	buf_printf(o, "Content-Type: multipart/mixed; boundary=\"%s\"%s%s",
	    bound, eol, eol);
	buf_printf(o, "--%s%s", bound, eol);
	scan_text_part(o, j, reason, scan_main_find(j));
	buf_printf(o, "%s--%s%s", eol, bound, eol);
	r = scan_locked_part(
	    j, "message.eml", "message/rfc822", j->data, j->len, o);
	buf_printf(o, "%s--%s--%s", eol, bound, eol);
	return r;
}

/* One edit of the original: bytes [off, end) become repl. */
struct scan_edit {
	size_t off, end;
	size_t seq;
	struct buf repl;
};

struct scan_edits {
	struct scan_edit e[SCAN_MAX_FINDINGS * 2 + 4];
	size_t n;
};

static struct buf *
scan_edit_add(struct scan_edits *es, size_t off, size_t end)
{
	struct scan_edit *e;

	if (es->n == sizeof(es->e) / sizeof(es->e[0]))
		return NULL;
	e = &es->e[es->n];
	e->off = off;
	e->end = end;
	e->seq = es->n++;
	buf_init(&e->repl, 0);
	return &e->repl;
}

static void
scan_edits_free(struct scan_edits *es)
{
	size_t i;

	for (i = 0; i < es->n; i++)
		buf_free(&es->e[i].repl);
	es->n = 0;
}

static int
scan_edit_cmp(const void *a, const void *b)
{
	const struct scan_edit *x = a, *y = b;

	if (x->off != y->off)
		return x->off < y->off ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Where a field added to the message's header goes: after its last
 * field. */
static size_t
scan_header_end(const struct scan_job *j)
{
	const struct mime_part *root = j->msg.root;

	if (root == NULL || root->nfields == 0)
		return root != NULL ? root->hdr_off : 0;
	return root->fields[root->nfields - 1].end;
}

static int
scan_field_is(
    const struct scan_job *j, const struct mime_field *f, const char *name)
{
	return f->name_len == strlen(name) &&
	       strncasecmp((const char *)j->data + f->off, name, f->name_len) ==
	           0;
}

static int
scan_field_stripped(const struct scan_job *j, size_t idx)
{
	size_t i;

	for (i = 0; i < j->nfind; i++)
		if (j->find[i].stage == ST_HEADER &&
		    j->find[i].action == ACT_STRIP && j->find[i].field == idx)
			return 1;
	return 0;
}

/* A new field at the end of the header. */
static int
scan_add_field(struct scan_job *j, struct scan_edits *es, const char *name,
    const char *value)
{
	const char *eol = scan_eol(j);
	size_t pos = scan_header_end(j);
	struct buf *r;

	if ((r = scan_edit_add(es, pos, pos)) == NULL)
		return -1;
	if (pos > 0 && j->data[pos - 1] != '\n')
		buf_add(r, eol, strlen(eol));
	buf_printf(r, "%s: %s%s", name, value, eol);
	return 0;
}

/* The spam tag before the Subject's value, or a Subject of its own. */
static int
scan_edit_tag(struct scan_job *j, struct scan_edits *es)
{
	const struct mime_part *root = j->msg.root;
	const char *tag = j->act->spamblocker.cat[j->tag].tag;
	struct buf *r;
	char value[160];
	size_t i, n;

	if (tag == NULL || tag[0] == '\0')
		return 0;
	for (i = 0; root != NULL && i < root->nfields; i++) {
		if (!scan_field_is(j, &root->fields[i], "Subject") ||
		    scan_field_stripped(j, i))
			continue;
		if ((r = scan_edit_add(es, root->fields[i].value_off,
		         root->fields[i].value_off)) == NULL)
			return -1;
		buf_add(r, tag, strlen(tag));
		return 0;
	}
	snprintf(value, sizeof(value), "%s", tag);
	n = strlen(value);
	while (n > 0 && value[n - 1] == ' ')
		value[--n] = '\0';
	return scan_add_field(j, es, "Subject", value);
}

/* What was found in the part target (and the parts inside it). */
static void
scan_part_reason(const struct scan_job *j, const struct mime_part *target,
    char *out, size_t len)
{
	char one[1024];
	size_t i, n;

	out[0] = '\0';
	for (i = 0; i < j->nfind; i++) {
		if (j->find[i].stage == ST_HEADER ||
		    scan_target(j->find[i].part) != target)
			continue;
		scan_find_text(&j->find[i], one, sizeof(one));
		n = strlen(out);
		if (n > 0 && n + 2 < len)
			memcpy(out + n, "; ", 3), n += 2;
		if (n + 1 < len)
			snprintf(
			    out + n, len - n, "%.*s", (int)(len - n - 1), one);
	}
}

/* The parts to replace: each target once, the worst action on it; a
 * part inside another replaced part is replaced with it.  Returns the
 * number of part edits, -1 if one cannot be made. */
static int
scan_edit_parts(struct scan_job *j, struct scan_edits *es)
{
	const struct mime_part *t[SCAN_MAX_FINDINGS];
	const struct scan_find *tf[SCAN_MAX_FINDINGS];
	int ta[SCAN_MAX_FINDINGS];
	const struct mime_part *p;
	struct buf *r;
	char reason[1024];
	size_t i, k, n = 0, last = 0;
	int count = 0;

	for (i = 0; i < j->nfind; i++) {
		if (j->find[i].action != ACT_STRIP &&
		    j->find[i].action != ACT_LOCK)
			continue;
		if (j->find[i].stage == ST_HEADER)
			continue;
		if ((p = scan_target(j->find[i].part)) == NULL)
			continue; /* a message action already */
		for (k = 0; k < n && t[k] != p; k++)
			;
		if (k == n) {
			t[n] = p;
			tf[n] = &j->find[i];
			ta[n++] = j->find[i].action;
		} else if (scan_severity(j->find[i].action) >
		               scan_severity(ta[k]) ||
		           (j->find[i].action == ta[k] &&
		               j->find[i].stage == ST_AV &&
		               tf[k]->stage != ST_AV)) {
			/* The worst action; a virus names the part best. */
			ta[k] = j->find[i].action;
			tf[k] = &j->find[i];
		}
	}
	/* In message order; an outer part before the parts inside it. */
	for (i = 1; i < n; i++)
		for (k = i; k > 0 && t[k]->hdr_off < t[k - 1]->hdr_off; k--) {
			p = t[k], t[k] = t[k - 1], t[k - 1] = p;
			{
				const struct scan_find *x = tf[k];
				int y = ta[k];

				tf[k] = tf[k - 1], tf[k - 1] = x;
				ta[k] = ta[k - 1], ta[k - 1] = y;
			}
		}
	for (i = 0; i < n; i++) {
		if (i > 0 && t[i]->hdr_off < last)
			continue; /* inside a part already replaced */
		if ((r = scan_edit_add(es, t[i]->hdr_off, t[i]->body_end)) ==
		    NULL)
			return -1;
		if (ta[i] == ACT_LOCK) {
			if (scan_lock_part(j, t[i], r) == -1)
				return -1;
		} else {
			scan_part_reason(j, t[i], reason, sizeof(reason));
			scan_text_part(r, j, reason, tf[i]);
		}
		last = t[i]->body_end;
		count++;
	}
	return count;
}

static int
scan_edits_collect(struct scan_job *j, struct scan_edits *es)
{
	const struct mime_part *root = j->msg.root;
	const struct mime_field *f;
	char value[128];
	size_t i;
	int nparts;

	for (i = 0; i < j->nfind; i++) {
		if (j->find[i].stage != ST_HEADER ||
		    j->find[i].action != ACT_STRIP || root == NULL)
			continue;
		f = &root->fields[j->find[i].field];
		if (scan_edit_add(es, f->off, f->end) == NULL)
			return -1;
	}
	if (j->tag >= 0 && scan_edit_tag(j, es) == -1)
		return -1;
	if (j->header >= 0) {
		snprintf(value, sizeof(value), "%s (score %.1f)",
		    scan_cats[j->header], j->spam_score);
		if (scan_add_field(j, es, j->act->spamblocker.header, value) ==
		    -1)
			return -1;
	}
	nparts = scan_edit_parts(j, es);
	return nparts;
}

static void
scan_edits_apply(const struct scan_job *j, struct scan_edits *es, struct buf *o)
{
	size_t i, pos = 0;

	qsort(es->e, es->n, sizeof(es->e[0]), scan_edit_cmp);
	for (i = 0; i < es->n; i++) {
		if (es->e[i].off < pos)
			continue; /* overlaps an earlier edit */
		buf_add(o, j->data + pos, es->e[i].off - pos);
		buf_add(o, es->e[i].repl.data, es->e[i].repl.len);
		pos = es->e[i].end;
	}
	buf_add(o, j->data + pos, j->len - pos);
}

/*
 * The result: a sealed memfd with the message, its BODYSTRUCTURE and
 * its BODY, one after the other, then the sections that are not byte
 * ranges of the message.
 */

/* Write the content of a section at *end, or point into the message. */
static int
scan_sect_put(int fd, uint64_t *end, const struct sect_content *c,
    const uint8_t *data, int in_fd, struct scan_sect_res *sr)
{
	sr->status = c->status;
	sr->off = 0;
	sr->len = c->len;
	if (c->len == 0)
		return 0;
	if (c->ref && in_fd) {
		sr->off = c->off;
		return 0;
	}
	sr->off = *end;
	*end += c->len;
	return write_all(fd, c->ref ? data + c->off : c->data.data, c->len);
}

/*
 * What a CHANGED answer carries about its message, computed once for
 * the report and the result fd: the message parsed, its BODYSTRUCTURE,
 * BODY and ENVELOPE.
 */
struct scan_out {
	const uint8_t *data; /* the message: the rewrite, or the input */
	size_t len;
	struct mime_msg msg;
	struct buf bs, body, env;
};

/* NULL, or why it cannot be described; scan_out_free() in any case. */
static const char *
scan_out_make(struct scan_out *out, const void *data, size_t len)
{
	memset(out, 0, sizeof(*out));
	out->data = data;
	out->len = len;
	buf_init(&out->bs, 0);
	buf_init(&out->body, 0);
	buf_init(&out->env, 0);
	if (mime_parse(&out->msg, data, len) == -1 ||
	    bs_write(&out->msg, 1, &out->bs) == -1 ||
	    bs_write(&out->msg, 0, &out->body) == -1 ||
	    bs_envelope_write(&out->msg, &out->env) == -1)
		return "out of memory";
	/* netd would take more for a broken scanner. */
	if (out->bs.len > SCAN_MAX_STRUCT || out->body.len > SCAN_MAX_STRUCT ||
	    out->env.len > SCAN_MAX_STRUCT)
		return "its BODYSTRUCTURE or ENVELOPE is too large";
	return NULL;
}

static void
scan_out_free(struct scan_out *out)
{
	mime_free(&out->msg);
	buf_free(&out->bs);
	buf_free(&out->body);
	buf_free(&out->env);
}

/*
 * The sections wanted, of the message out that is at offset 0 of fd,
 * from *end on.  A section that asks for what an earlier one did shares
 * its bytes: the same part decoded twice is not written twice.
 */
static int
scan_sections(const struct scan_job *j, const struct scan_out *out, int fd,
    uint64_t *end, struct scan_res *res)
{
	const struct mime_msg *pm = &out->msg;
	struct sect s[SCAN_MAX_SECT];
	struct sect_content c;
	struct mime_msg own;
	const struct mime_msg *msg = pm;
	struct buf crlf;
	size_t i, k, n = j->nsect;
	int r, ok = 0;

	if (n == 0)
		return 0;
	memset(s, 0, sizeof(s));
	memset(&own, 0, sizeof(own));
	buf_init(&crlf, 0);
	/* Of the message as the server would serve it: CRLF. */
	if ((r = sect_crlf(out->data, out->len, &crlf)) == -1)
		goto out;
	if (r == 1) {
		if (mime_parse(&own, crlf.data, crlf.len) == -1)
			goto out;
		msg = &own;
	}
	for (i = 0; i < n; i++) {
		if (sect_parse(msg, (int)j->sect[i].binary, j->sect[i].spec,
		        &s[i]) == -1)
			goto out;
		for (k = 0; k < i && !sect_same(&s[k], &s[i]); k++)
			;
		if (k < i) {
			res->sect[i] = res->sect[k];
			continue;
		}
		if (sect_get(msg, &s[i], &c) == -1)
			goto out;
		r = scan_sect_put(
		    fd, end, &c, msg->data, msg == pm, &res->sect[i]);
		sect_content_free(&c);
		if (r == -1)
			goto out;
	}
	res->nsect = (uint32_t)n;
	ok = 1;
out:
	for (i = 0; i < n; i++)
		sect_free(&s[i]);
	mime_free(&own);
	buf_free(&crlf);
	return ok ? 0 : -1;
}

/*
 * The report: every finding, the action and why (scan.h).
 */

/* A JSON string of n bytes; with latin1, bytes from 0x80 up are written
 * as \u0080..\u00ff, so that a reader gets the bytes back exactly. */
static void
scan_json_mem(struct buf *o, const uint8_t *p, size_t n, int latin1)
{
	size_t i;

	buf_add_u8(o, '"');
	for (i = 0; i < n; i++) {
		if (p[i] == '"' || p[i] == '\\')
			buf_printf(o, "\\%c", p[i]);
		else if (p[i] < 0x20 || p[i] == 0x7f ||
		         (latin1 && p[i] >= 0x80))
			buf_printf(o, "\\u%04x", p[i]);
		else
			buf_add_u8(o, p[i]);
	}
	buf_add_u8(o, '"');
}

static void
scan_json_str(struct buf *o, const char *s)
{
	scan_json_mem(o, (const uint8_t *)s, strlen(s), 0);
}

static void
scan_json_kv(struct buf *o, const char *k, const char *v)
{
	if (v == NULL || v[0] == '\0')
		return;
	buf_printf(o, ",\"%s\":", k);
	scan_json_str(o, v);
}

/* Valid UTF-8 is kept; anything else in names and subjects becomes '?'
 * so that the JSON is always valid. */
static void
scan_utf8(char *s)
{
	unsigned char *p = (unsigned char *)s;
	size_t n, k;

	while (*p != '\0') {
		if (*p < 0x80) {
			p++;
			continue;
		}
		n = (*p & 0xe0) == 0xc0   ? 1
		    : (*p & 0xf0) == 0xe0 ? 2
		    : (*p & 0xf8) == 0xf0 ? 3
		                          : 0;
		for (k = 1; n > 0 && k <= n; k++)
			if ((p[k] & 0xc0) != 0x80)
				n = 0;
		if (n == 0 || (*p == 0xc0 || *p == 0xc1)) {
			*p++ = '?';
			continue;
		}
		p += n + 1;
	}
}

static void
scan_report_json(const struct scan_job *j, const struct scan_res *res,
    const struct scan_out *out, long ms, struct buf *o)
{
	struct scan_find fc;
	size_t i;

	buf_printf(o, "{\"verdict\":\"%s\",\"action\":\"%s\",\"reason\":",
	    scan_verdict_name((int)res->verdict),
	    action_name((int)res->action));
	scan_json_str(o, res->reason);
	buf_printf(o,
	    ",\"kind\":\"%s\",\"size\":%zu,\"parts\":%zu,"
	    "\"time_ms\":%ld,\"more\":%zu,\"findings\":[",
	    scan_kind_name(j->kind), j->len, j->msg.nparts, ms, j->more);
	if (j->oversize)
		buf_printf(o, "{\"stage\":\"oversize\",\"action\":\"%s\"}",
		    action_name(j->action));
	for (i = 0; i < j->nfind; i++) {
		fc = j->find[i];
		scan_utf8(fc.what);
		scan_utf8(fc.subject);
		scan_utf8(fc.filename);
		scan_utf8(fc.member);
		scan_utf8(fc.type);
		scan_utf8(fc.detected);
		buf_printf(o, "%s{\"stage\":\"%s\",\"action\":\"%s\"",
		    i > 0 || j->oversize ? "," : "", scan_stages[fc.stage],
		    action_name(fc.action));
		scan_json_kv(o, "part", fc.section);
		scan_json_kv(o, "filename", fc.filename);
		scan_json_kv(o, "member", fc.member);
		scan_json_kv(o, "type", fc.type);
		scan_json_kv(o, "detected", fc.detected);
		switch (fc.stage) {
		case ST_HEADER:
		case ST_CTYPE:
		case ST_FILENAME:
			scan_json_kv(o, "rule", fc.what);
			scan_json_kv(o, "match", fc.subject);
			break;
		case ST_AV:
			scan_json_kv(o, "virus", fc.what);
			break;
		case ST_APT:
			scan_json_kv(o, "threat", fc.what);
			scan_json_kv(o, "level", scan_levels[fc.level]);
			scan_json_kv(o, "sha256", fc.sha256);
			scan_json_kv(o, "md5", fc.md5);
			break;
		case ST_SPAM:
			if (fc.category >= 0) {
				scan_json_kv(
				    o, "category", scan_cats[fc.category]);
				if (isfinite(fc.score))
					buf_printf(
					    o, ",\"score\":%.1f", fc.score);
				scan_json_kv(o, "detail", fc.subject);
			} else
				scan_json_kv(o, "detail", fc.what);
			break;
		default:
			scan_json_kv(o, "detail", fc.what);
			break;
		}
		if (fc.alarm)
			buf_printf(o, ",\"alarm\":true");
		buf_add_u8(o, '}');
	}
	buf_add_u8(o, ']');
	if (out != NULL) {
		buf_printf(o, ",\"envelope\":");
		scan_json_mem(o, out->env.data, out->env.len, 1);
	}
	buf_printf(o, "}\n");
}

static void
scan_report_text(const struct scan_job *j, const struct scan_res *res, long ms,
    struct buf *o)
{
	char one[1100];
	size_t i;

	buf_printf(o, "verdict: %s\naction: %s\n",
	    scan_verdict_name((int)res->verdict),
	    action_name((int)res->action));
	if (res->reason[0] != '\0')
		buf_printf(o, "reason: %s\n", res->reason);
	buf_printf(o, "message: %zu bytes, %zu parts, judged in %ld ms (%s)\n",
	    j->len, j->msg.nparts, ms, scan_kind_name(j->kind));
	if (j->oversize)
		buf_printf(
		    o, "finding: oversize -> %s\n", action_name(j->action));
	for (i = 0; i < j->nfind; i++) {
		scan_find_text(&j->find[i], one, sizeof(one));
		scan_ascii(one);
		buf_printf(o, "finding: %s: %s -> %s\n",
		    scan_stages[j->find[i].stage], one,
		    action_name(j->find[i].action));
		if (j->find[i].stage == ST_APT)
			buf_printf(o, "  sha256 %s md5 %s\n", j->find[i].sha256,
			    j->find[i].md5);
	}
	if (j->more)
		buf_printf(o, "finding: %zu more not listed\n", j->more);
}

/*
 * The result fd:
 * [message][BODYSTRUCTURE][BODY][ENVELOPE][sections][json][text].
 * With no message (a report of a verdict that is not CHANGED), only the
 * report.
 */
static int
scan_result_fd(const struct scan_job *j, const struct scan_out *out,
    const struct buf *json, const struct buf *text, struct scan_res *res)
{
	uint64_t end = 0;
	int fd;

	fd = memfd_create("imapgw-scan", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd == -1)
		goto fail;
	if (out != NULL) {
		res->msg_off = 0;
		res->msg_len = out->len;
		res->bs_off = res->msg_len;
		res->bs_len = out->bs.len;
		res->body_off = res->bs_off + res->bs_len;
		res->body_len = out->body.len;
		res->env_off = res->body_off + res->body_len;
		res->env_len = out->env.len;
		end = res->env_off + res->env_len;
		if (write_all(fd, out->data, out->len) == -1 ||
		    write_all(fd, out->bs.data, out->bs.len) == -1 ||
		    write_all(fd, out->body.data, out->body.len) == -1 ||
		    write_all(fd, out->env.data, out->env.len) == -1 ||
		    scan_sections(j, out, fd, &end, res) == -1)
			goto fail;
	}
	if (json != NULL) {
		res->json_off = end;
		res->json_len = json->len;
		end += json->len;
		res->text_off = end;
		res->text_len = text->len;
		end += text->len;
		if (write_all(fd, json->data, json->len) == -1 ||
		    write_all(fd, text->data, text->len) == -1)
			goto fail;
	}
	if (fcntl(fd, F_ADD_SEALS,
	        F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) ==
	        -1 ||
	    lseek(fd, 0, SEEK_SET) == -1)
		goto fail;
	res->fd = fd;
	return 0;
fail:
	log_warn("scan: result memfd");
	if (fd != -1)
		close(fd);
	return -1;
}

/*
 * Logging: one line per judged message; an alarm line per finding of a
 * rule with alarm set.
 */

static void
scan_log_findings(const struct scan_job *j, struct buf *o)
{
	const struct scan_find *f;
	size_t i;

	for (i = 0; i < j->nfind; i++) {
		f = &j->find[i];
		if (!f->log && f->action == ACT_ALLOW)
			continue;
		if (o->len > 0)
			buf_add(o, " ", 1);
		buf_printf(o, "%s:", scan_stages[f->stage]);
		switch (f->stage) {
		case ST_HEADER:
		case ST_CTYPE:
		case ST_FILENAME:
			buf_printf(o, "rule=%s", f->what);
			break;
		case ST_AV:
			buf_printf(o, "virus=%s", f->what);
			break;
		case ST_APT:
			buf_printf(o, "threat=%s,level=%s,sha256=%s", f->what,
			    scan_levels[f->level], f->sha256);
			break;
		case ST_SPAM:
			if (f->category >= 0)
				buf_printf(o, "category=%s,score=%.1f",
				    scan_cats[f->category], f->score);
			else
				buf_printf(o, "unavailable");
			break;
		default:
			buf_printf(o, "error");
			break;
		}
		if (f->section[0] != '\0')
			buf_printf(o, ",part=%s", f->section);
		buf_printf(o, ",action=%s", action_name(f->action));
	}
	if (j->more)
		buf_printf(o, "%s+%zu", o->len ? " " : "", j->more);
	buf_add_u8(o, 0);
	scan_ascii((char *)o->data);
}

static void
scan_log(const struct scan_job *j, const struct scan_res *res, long ms)
{
	char size[32], parts[32], time[32], text[1100];
	struct buf fl;
	size_t i;

	for (i = 0; i < j->nfind; i++) {
		if (!j->find[i].alarm)
			continue;
		scan_find_text(&j->find[i], text, sizeof(text));
		scan_ascii(text);
		log_event(LOG_ALERT, "alarm", "policy", j->policy, "client",
		    j->client, "user", j->user, "action",
		    action_name(j->find[i].action), "reason", text, NULL);
	}
	buf_init(&fl, 0);
	scan_log_findings(j, &fl);
	snprintf(size, sizeof(size), "%zu", j->len);
	snprintf(parts, sizeof(parts), "%zu", j->msg.nparts);
	snprintf(time, sizeof(time), "%ld", ms);
	log_event(j->action == ACT_ALLOW ? LOG_INFO : LOG_NOTICE,
	    "message judged", "policy", j->policy, "client", j->client, "user",
	    j->user, "kind", scan_kind_name(j->kind), "verdict",
	    scan_verdict_name((int)res->verdict), "action",
	    action_name((int)res->action), "findings", (char *)fl.data, "size",
	    size, "parts", parts, "time_ms", time, NULL);
	buf_free(&fl);
	if (j->oversize && j->action == ACT_ALLOW)
		log_event(LOG_NOTICE, "not scanned", "client", j->client,
		    "user", j->user, "kind", scan_kind_name(j->kind), "action",
		    "allow", "reason", res->reason, NULL);
	else if (j->nerror > 0 && res->verdict == SCAN_CLEAN)
		log_event(LOG_WARNING, "delivered unscanned", "client",
		    j->client, "user", j->user, "kind", scan_kind_name(j->kind),
		    "action", "allow", "reason", res->reason, NULL);
}

/*
 * Applying the decision.
 */

static void
scan_error_res(struct scan_res *res, const char *why)
{
	scan_res_clear(res);
	/* No result fd: no range points into one. */
	res->msg_off = res->msg_len = res->bs_off = res->bs_len = 0;
	res->body_off = res->body_len = res->env_off = res->env_len = 0;
	res->json_off = res->json_len = res->text_off = res->text_len = 0;
	res->nsect = 0;
	res->verdict = SCAN_ERROR;
	res->action = ACT_ALLOW;
	snprintf(res->reason, sizeof(res->reason), "%s", why);
}

static void
scan_deny(struct scan_job *j, struct scan_res *res, struct buf *m)
{
	buf_reset(m);
	scan_build_deny(j, res->reason, m);
	res->verdict = SCAN_CHANGED;
	res->action = ACT_DENY;
}

/* Decide the verdict; m gets the message to send when CHANGED. */
static void
scan_apply(struct scan_job *j, struct scan_res *res, struct buf *m)
{
	struct scan_edits *es;
	size_t nv = j->nvirus;
	int nparts;

	scan_reason(j, res->reason, sizeof(res->reason));
	res->action = (uint32_t)j->action;
	if (j->action == ACT_ALLOW) {
		res->verdict = SCAN_CLEAN;
		return;
	}
	if (j->msg_action == ACT_DROP || j->msg_action == ACT_BLOCK) {
		res->verdict = SCAN_DROP;
		res->action = (uint32_t)j->msg_action;
		return;
	}
	if (j->kind == SCAN_APPEND) {
		/* An upload is refused, never rewritten. */
		res->verdict = SCAN_REJECT;
		return;
	}
	if (j->msg_action == ACT_DENY) {
		scan_deny(j, res, m);
		return;
	}
	if (j->msg_action == ACT_LOCK) {
		if (scan_build_msg_lock(j, res->reason, m) == -1) {
			log_warnx("cannot lock the message: %s",
			    scan_have_key ? "sealing failed" : "no lock key");
			scan_deny(j, res, m);
			return;
		}
		res->verdict = SCAN_CHANGED;
		res->action = ACT_LOCK;
		return;
	}
	if ((es = calloc(1, sizeof(*es))) == NULL ||
	    (nparts = scan_edits_collect(j, es)) == -1) {
		/* A part that cannot be replaced: deny. */
		if (es != NULL)
			scan_edits_free(es);
		free(es);
		scan_deny(j, res, m);
		return;
	}
	if (es->n == 0) {
		/* Findings whose actions change nothing (a tag without
		 * text): the message is delivered as it is. */
		free(es);
		res->verdict = SCAN_CLEAN;
		return;
	}
	scan_edits_apply(j, es, m);
	scan_edits_free(es);
	free(es);
	res->verdict = SCAN_CHANGED;
	/* What strip and lock left must scan clean, or deny. */
	if (nparts > 0 && j->act->antivirus.enabled && j->engine != NULL) {
		size_t ne = j->nerror;

		scan_whole(j, m->data, m->len, 0);
		if (j->nvirus != nv ||
		    (j->nerror != ne &&
		        j->act->antivirus.on_error != ACT_ALLOW)) {
			scan_reason(j, res->reason, sizeof(res->reason));
			scan_deny(j, res, m);
		}
	}
}

static void
scan_run(struct scan_job *j)
{
	const struct cfg_antivirus *av = &j->act->antivirus;
	size_t nv = 0, ne = 0;

	if ((uint64_t)j->len > j->act->general.max_email_size) {
		j->oversize = 1;
		j->action = j->act->general.oversize;
		j->msg_action = j->action;
		snprintf(j->type, sizeof(j->type), "oversize");
		return;
	}
	scan_set_deadline(j, av->max_scan_time_ms);
	if (av->enabled) {
		av_limits_from(av, &j->lim);
		if ((j->engine = av_engines_find(av->database)) == NULL)
			scan_add_error(
			    j, NULL, NULL, "no antivirus engine is loaded");
	}
	scan_headers(j);
	if (av->enabled && j->engine != NULL) {
		nv = j->nvirus;
		ne = j->nerror;
		scan_whole_first(j);
	}
	scan_parts(j, j->msg.root);
	if (av->enabled && j->engine != NULL)
		scan_whole_last(j, nv, ne);
	scan_spam(j);
	scan_decide(j);
}

static long
scan_ms_since(const struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (long)((t1.tv_sec - t0->tv_sec) * 1000 +
	              (t1.tv_nsec - t0->tv_nsec) / 1000000);
}

/*
 * SCAN_F_CUT: a message the gateway sanitized before.  It is not judged
 * again; the answer describes it as it is.
 */
static void
scan_cut(struct scan_job *j, struct scan_res *res)
{
	if (j->kind == SCAN_APPEND) {
		/* An upload is never rewritten: CHANGED cannot answer it. */
		scan_error_res(res, "an upload cannot be an already "
		                    "sanitized message (SCAN_F_CUT)");
		log_warnx("scan: %s", res->reason);
		return;
	}
	res->verdict = SCAN_CHANGED;
	res->action = ACT_ALLOW;
	snprintf(res->reason, sizeof(res->reason), "already sanitized");
	log_debug("scan: an already sanitized message (%zu bytes) for %s, "
	          "policy %s: not scanned",
	    j->len, j->client, j->policy);
}

static void
scan_job_run(const struct cfg_action *act, const struct scan_rt *rt,
    const struct scan_opts *o, const void *data, size_t len,
    struct scan_res *res)
{
	struct scan_job *j;
	struct scan_out out, *outp = NULL;
	struct buf m, json, text;
	const char *why;
	int cut = (o->flags & SCAN_F_CUT) != 0, described = 0;
	long ms;

	scan_res_init(res);
	if ((j = calloc(1, sizeof(*j))) == NULL) {
		scan_error_res(res, "out of memory");
		return;
	}
	clock_gettime(CLOCK_MONOTONIC, &j->t0);
	j->act = act;
	j->rt = rt;
	j->kind = o->kind;
	j->flags = (int)o->flags;
	j->sect = o->sect;
	j->nsect = o->nsect > SCAN_MAX_SECT ? SCAN_MAX_SECT : o->nsect;
	j->user = o->user != NULL ? o->user : "";
	j->client = o->client != NULL ? o->client : "";
	j->policy = o->policy != NULL ? o->policy : "";
	j->data = data;
	j->len = len;
	j->msg_action = ACT_ALLOW;
	j->tag = j->header = -1;
	if (mime_parse(&j->msg, data, len) == -1) {
		scan_error_res(res, "out of memory parsing the message");
		free(j);
		return;
	}
	buf_init(&m, 0);
	buf_init(&json, 0);
	buf_init(&text, 0);
	if (cut)
		scan_cut(j, res);
	else {
		scan_run(j);
		scan_apply(j, res, &m);
	}
	scan_ascii(res->reason);
	if (res->verdict == SCAN_CHANGED) {
		described = 1;
		why = scan_out_make(
		    &out, cut ? j->data : m.data, cut ? j->len : m.len);
		if (why == NULL)
			outp = &out;
		else {
			scan_error_res(res, "cannot build the result");
			log_warnx("scan: cannot describe the message: %s", why);
		}
	}
	ms = scan_ms_since(&j->t0);
	if (o->flags & SCAN_F_REPORT) {
		scan_report_json(j, res, outp, ms, &json);
		scan_report_text(j, res, ms, &text);
	}
	if ((outp != NULL || (o->flags & SCAN_F_REPORT)) &&
	    scan_result_fd(j, outp, (o->flags & SCAN_F_REPORT) ? &json : NULL,
	        &text, res) == -1)
		scan_error_res(res, "cannot build the result");
	if (!cut)
		scan_log(j, res, ms);
	if (described)
		scan_out_free(&out);
	buf_free(&m);
	buf_free(&json);
	buf_free(&text);
	mime_free(&j->msg);
	free(j);
}

void
scan_message_opts(const struct cfg_action *act, const struct scan_opts *o,
    const void *data, size_t len, struct scan_res *res)
{
	struct scan_rt *rt;
	char err[512];

	if ((rt = scan_rt_new(act, err, sizeof(err))) == NULL) {
		scan_res_init(res);
		scan_error_res(res, err);
		return;
	}
	scan_job_run(act, rt, o, data, len, res);
	scan_rt_free(rt);
}

void
scan_message(const struct cfg_action *act, int kind, const char *user,
    const char *client, const void *data, size_t len, struct scan_res *res)
{
	scan_message_sect(act, kind, user, client, data, len, NULL, 0, res);
}

void
scan_message_sect(const struct cfg_action *act, int kind, const char *user,
    const char *client, const void *data, size_t len,
    const struct scan_sect *sect, size_t nsect, struct scan_res *res)
{
	struct scan_opts o;

	memset(&o, 0, sizeof(o));
	o.kind = kind;
	o.user = user;
	o.client = client;
	o.sect = sect;
	o.nsect = nsect;
	scan_message_opts(act, &o, data, len, res);
}

/*
 * Loading, before the sandbox.
 */

int
scan_load(const struct config *cfg, char *err, size_t len)
{
	uint8_t key[32];
	size_t i;
	int lock = 0;

	/* The time zone, while /etc/localtime can be read: libarchive
	 * converts member times through it. */
	tzset();
	mime_init();
	if (av_init() == -1) {
		snprintf(err, len, "libclamav cannot be initialised");
		return -1;
	}
	if (detect_init(err, len) == -1)
		return -1;
	if (av_engines_load(cfg, err, len) == -1)
		return -1;
	/* The lock key, if an action that a policy uses can lock. */
	for (i = 0; i < cfg->nactions; i++)
		if (cfg->actions[i].used && scan_action_locks(&cfg->actions[i]))
			lock = 1;
	if (lock) {
		if (lock_key_load(cfg->state_dir, 1, key, err, len) == -1)
			return -1;
		scan_set_lock_key(key);
		explicit_bzero(key, sizeof(key));
	}
	/* Compile now what can be: errors show at start, not per message. */
	for (i = 0; i < cfg->nactions; i++) {
		if (!cfg->actions[i].used)
			continue;
		if (scan_rt_get(cfg, i, err, len) == NULL)
			return -1;
		if (cfg->actions[i].apt_blocker.enabled &&
		    cfg->actions[i].apt_blocker.missing)
			log_warnx("action '%s': APT Blocker database %s does "
			          "not exist: no hashes are known",
			    cfg->actions[i].name,
			    cfg->actions[i].apt_blocker.database);
	}
	return 0;
}

int
scan_ready(char *err, size_t len)
{
	/* Inside the chroot, state_dir/scand/tmp is /tmp. */
	return av_engines_ready("/tmp", err, len);
}

const char *
scan_missing(const struct config *cfg)
{
	static char what[1100];
	size_t i;

	for (i = 0; i < cfg->nactions; i++) {
		if (!cfg->actions[i].used)
			continue;
		if (cfg->actions[i].antivirus.enabled &&
		    av_engines_find(cfg->actions[i].antivirus.database) ==
		        NULL) {
			snprintf(what, sizeof(what),
			    "the antivirus database %s",
			    cfg->actions[i].antivirus.database);
			return what;
		}
		if (!scan_have_key && scan_action_locks(&cfg->actions[i])) {
			snprintf(what, sizeof(what), "the lock key");
			return what;
		}
	}
	return NULL;
}
/*
 * Requests and answers.
 */

static int scan_refuse(struct scan_res *res, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int
scan_refuse(struct scan_res *res, const char *fmt, ...)
{
	va_list ap;

	res->verdict = SCAN_ERROR;
	res->action = ACT_ALLOW;
	va_start(ap, fmt);
	vsnprintf(res->reason, sizeof(res->reason), fmt, ap);
	va_end(ap);
	log_warnx("scan request %llu refused: %s",
	    (unsigned long long)res->reqid, res->reason);
	return 1;
}

/*
 * The sections of a request, after its size; none in an old-format one.
 * More than SCAN_MAX_SECT are read (the frame bounds them) and dropped:
 * the request is refused.  Returns the count announced.
 */
static uint32_t
scan_req_sections(struct reader *r, struct scan_req *req, uint32_t *badbin,
    uint32_t *longspec)
{
	uint32_t i, n, bin;
	char *spec;

	*badbin = *longspec = UINT32_MAX;
	if (r->err || r->left == 0)
		return 0;
	req->has_sect = 1;
	n = rd_u32(r);
	for (i = 0; i < n && !r->err; i++) {
		bin = rd_u32(r);
		if ((spec = rd_str(r, IMSG_MAX_PAYLOAD)) == NULL)
			break;
		if (bin > 1 && *badbin == UINT32_MAX)
			*badbin = i;
		if (strlen(spec) > SCAN_MAX_SECT_SPEC &&
		    *longspec == UINT32_MAX)
			*longspec = i;
		if (i >= SCAN_MAX_SECT) {
			free(spec);
			continue;
		}
		req->sect[i].binary = bin;
		req->sect[i].spec = spec;
		req->nsect = i + 1;
	}
	return n;
}

int
scan_req_read(struct imsg *imsg, const struct config *cfg, struct scan_req *req,
    struct scan_res *res)
{
	struct reader r;
	struct stat st;
	uint32_t nsect, badbin, longspec;

	memset(req, 0, sizeof(*req));
	req->fd = imsg->fd;
	imsg->fd = -1;
	scan_res_init(res);
	imsg_reader(imsg, &r);
	req->reqid = rd_u64(&r);
	req->kind = rd_u32(&r);
	req->action = rd_u32(&r);
	req->user = rd_str(&r, 1024);
	req->client = rd_str(&r, 256);
	req->size = rd_u64(&r);
	nsect = scan_req_sections(&r, req, &badbin, &longspec);
	if (!r.err && r.left > 0) {
		req->has_flags = 1;
		req->flags = rd_u32(&r);
		req->policy = rd_str(&r, 256);
	} else
		req->policy = strdup("");
	if (rd_end(&r) != 0 || req->user == NULL || req->client == NULL ||
	    req->policy == NULL)
		return -1;
	res->reqid = req->reqid;
	res->has_sect = req->has_sect;
	res->has_flags = req->has_flags;
	if (req->flags & ~(uint32_t)SCAN_F_ALL)
		return scan_refuse(res, "unknown flags 0x%x", req->flags);
	if (req->kind != SCAN_FETCH && req->kind != SCAN_APPEND)
		return scan_refuse(res, "unknown kind %u", req->kind);
	if (req->action >= cfg->nactions)
		return scan_refuse(res, "no action %u (the config has %zu)",
		    req->action, cfg->nactions);
	if (req->fd == -1)
		return scan_refuse(res, "no message fd");
	if (fstat(req->fd, &st) == -1 || !S_ISREG(st.st_mode))
		return scan_refuse(res, "the message fd is not a memfd");
	if ((uint64_t)st.st_size != req->size)
		return scan_refuse(res,
		    "size %llu does not match the message fd (%lld bytes)",
		    (unsigned long long)req->size, (long long)st.st_size);
	if (req->size > SIZE_MAX / 2)
		return scan_refuse(res, "message too large");
	if (nsect > SCAN_MAX_SECT)
		return scan_refuse(
		    res, "%u sections (at most %d)", nsect, SCAN_MAX_SECT);
	if (badbin != UINT32_MAX)
		return scan_refuse(res, "section %u: binary is %u", badbin,
		    req->sect[badbin].binary);
	if (longspec != UINT32_MAX)
		return scan_refuse(res, "section %u: spec longer than %d bytes",
		    longspec, SCAN_MAX_SECT_SPEC);
	return 0;
}

void
scan_req_clear(struct scan_req *req)
{
	uint32_t i;

	for (i = 0; i < req->nsect; i++)
		free(req->sect[i].spec);
	free(req->user);
	free(req->client);
	free(req->policy);
	if (req->fd != -1)
		close(req->fd);
	memset(req, 0, sizeof(*req));
	req->fd = -1;
}

/*
 * The message bytes.  A memfd sealed against shrinking is mapped; any
 * other is read into memory, because the sender could truncate it
 * under our mapping (SIGBUS).
 */
static void *
scan_map(int fd, size_t len, int *mapped)
{
	uint8_t *p;
	ssize_t n;
	size_t off = 0;
	int seals;

	seals = fcntl(fd, F_GET_SEALS);
	if (seals != -1 && (seals & F_SEAL_SHRINK)) {
		p = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
		*mapped = 1;
		return p == MAP_FAILED ? NULL : p;
	}
	*mapped = 0;
	if ((p = malloc(len)) == NULL)
		return NULL;
	while (off < len) {
		n = pread(fd, p + off, len - off, (off_t)off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			free(p);
			return NULL;
		}
		off += (size_t)n;
	}
	return p;
}

void
scan_request(
    const struct config *cfg, const struct scan_req *req, struct scan_res *res)
{
	const struct scan_rt *rt;
	struct scan_opts o;
	size_t len = (size_t)req->size;
	int mapped = 0;
	void *p = NULL;
	char err[512];

	if ((rt = scan_rt_get(cfg, req->action, err, sizeof(err))) == NULL) {
		scan_res_init(res);
		scan_error_res(res, err);
		log_warnx("scan request %llu: action %s: %s",
		    (unsigned long long)req->reqid,
		    cfg->actions[req->action].name, err);
		goto out;
	}
	if (len > 0 && (p = scan_map(req->fd, len, &mapped)) == NULL) {
		scan_res_init(res);
		scan_error_res(res, "cannot read the message");
		log_warn("scan request %llu: reading the message",
		    (unsigned long long)req->reqid);
		goto out;
	}
	memset(&o, 0, sizeof(o));
	o.kind = (int)req->kind;
	o.flags = req->flags;
	o.user = req->user;
	o.client = req->client;
	o.policy = req->policy;
	o.sect = req->sect;
	o.nsect = req->nsect;
	scan_job_run(
	    &cfg->actions[req->action], rt, &o, p != NULL ? p : "", len, res);
	if (mapped)
		munmap(p, len);
	else
		free(p);
out:
	res->reqid = req->reqid;
	res->has_sect = req->has_sect;
	res->has_flags = req->has_flags;
}

int
scan_res_write(const struct scan_res *res, struct buf *b)
{
	uint32_t i, nsect;

	if (buf_add_u64(b, res->reqid) == -1 ||
	    buf_add_u32(b, res->verdict) == -1 ||
	    buf_add_u32(b, res->action) == -1 ||
	    buf_add_str(b, res->reason) == -1 ||
	    buf_add_u64(b, res->msg_off) == -1 ||
	    buf_add_u64(b, res->msg_len) == -1 ||
	    buf_add_u64(b, res->bs_off) == -1 ||
	    buf_add_u64(b, res->bs_len) == -1 ||
	    buf_add_u64(b, res->body_off) == -1 ||
	    buf_add_u64(b, res->body_len) == -1)
		return -1;
	/* An old-format request gets an old-format answer. */
	if (!res->has_sect)
		return 0;
	nsect = res->verdict == SCAN_CHANGED ? res->nsect : 0;
	if (buf_add_u32(b, nsect) == -1)
		return -1;
	for (i = 0; i < nsect; i++)
		if (buf_add_u32(b, res->sect[i].status) == -1 ||
		    buf_add_u64(b, res->sect[i].off) == -1 ||
		    buf_add_u64(b, res->sect[i].len) == -1)
			return -1;
	if (!res->has_flags)
		return 0;
	if (buf_add_u64(b, res->json_off) == -1 ||
	    buf_add_u64(b, res->json_len) == -1 ||
	    buf_add_u64(b, res->text_off) == -1 ||
	    buf_add_u64(b, res->text_len) == -1 ||
	    buf_add_u64(b, res->env_off) == -1 ||
	    buf_add_u64(b, res->env_len) == -1)
		return -1;
	return 0;
}
