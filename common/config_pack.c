/*
 * config_pack/config_unpack: the part of the configuration a child role
 * needs, as a flat little-endian blob (buf.h builders and readers).
 *
 *	header:   u32 magic, u32 version, u32 role, u32 generation,
 *		  u32 log target, u32 log format, u32 log level
 *	netd:	  state_dir, u64 verdict cache size, servers, actions,
 *		  policies
 *	scand:	  state_dir (the lock key is there), actions
 *	tlsd:	  tls profiles (with the CA bytes), certificates (names
 *		  and file names), servers, policies (name and tls only),
 *		  then the certificates' bytes: cert, key, OCSP response
 *
 * TLS: a server is sent with its tls mode, tls_profile name and
 * server_name (and, for tlsd, the profile's index); a policy with its tls
 * mode, certificate names and profile name (and, for tlsd, their
 * indices).  netd gets no file bytes of any kind: no certificate, key,
 * CA or OCSP response.  For tlsd the parent reads the certificate files
 * when it packs (config_cert_read), into space reserved beforehand so
 * that the buffer is never reallocated with key bytes in it, and wipes
 * its copies at once; the caller wipes the packed buffer
 * (proc_config_memfd).
 *
 * auto_block goes to no child: the parent keeps the list and sends netd
 * only the addresses blocked (IMSG_BLOCK_SET), so an unpacked config has
 * no duration and no exceptions.
 *
 * An action is: name, builtin, used, general (with consistency),
 * antivirus, deny message;
 * for scand it goes on with the content type, file name and header
 * rules, APT Blocker and spamBlocker, with the bytes of the files the
 * parent read for them (netd gets none of that).
 *
 * Socket addresses travel as u8 family (4 or 6), the address bytes and a
 * u16 port, never as raw struct bytes.  File contents travel as blobs:
 * u8 0 (none), 1 (u32 length and the bytes) or 2 (u32 index of an
 * earlier action whose same file has the same bytes, not sent twice).
 * Scores travel as the bits of the IEEE 754 double.  Unpack trusts
 * nothing: every count, string, blob, enum and index is checked, and the
 * blob must end exactly where the last field does.
 */
#include <sys/stat.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <syslog.h>

#include <openssl/evp.h>
#include <openssl/tls1.h>

#include "config.h"
#include "log.h"
#include "util.h"

#define PACK_MAGIC 0x46434749 /* "IGCF" */
#define PACK_VERSION 7

/* Smallest encodings, to refuse a count the blob cannot hold. */
#define PACK_MIN_SERVER 42
#define PACK_MIN_PROFILE 41
#define PACK_MIN_CERT 29
#define PACK_MIN_TLSD_POLICY 30
#define PACK_MIN_MEMBER 24
#define PACK_MIN_ACTION 86
#define PACK_MIN_RULE 28
#define PACK_MIN_EXCEPTION 16

/* The largest files the loader reads (common/config.c). */
#define PACK_MAX_APT (256 * 1024 * 1024)
#define PACK_MAX_SPAM_RULES (16 * 1024 * 1024)
#define PACK_MAX_TAG 128
#define PACK_MAX_HEADER 76
#define PACK_MAX_ARCHIVE_DEPTH 16
#define PACK_MAX_SPAM_TIMEOUT (60 * 60 * 1000)

enum { BLOB_NONE = 0, BLOB_BYTES, BLOB_SAME };

/* The actions each key accepts (a bit per ACT_*). */
#define A(x) (1u << (x))
#define ACTS_ON_VIRUS                                              \
	(A(ACT_ALLOW) | A(ACT_STRIP) | A(ACT_LOCK) | A(ACT_DENY) | \
	    A(ACT_DROP) | A(ACT_BLOCK))
#define ACTS_ON_ERROR (A(ACT_ALLOW) | A(ACT_LOCK) | A(ACT_DENY) | A(ACT_DROP))
#define ACTS_OVERSIZE (A(ACT_ALLOW) | A(ACT_DENY) | A(ACT_DROP))
#define ACTS_RULE ACTS_ON_VIRUS
#define ACTS_HEADER \
	(A(ACT_ALLOW) | A(ACT_STRIP) | A(ACT_DENY) | A(ACT_DROP) | A(ACT_BLOCK))
#define ACTS_SPAM                                                  \
	(A(ACT_ALLOW) | A(ACT_TAG) | A(ACT_HEADER) | A(ACT_DENY) | \
	    A(ACT_DROP) | A(ACT_BLOCK))
#define ACTS_UNAVAILABLE (A(ACT_ALLOW) | A(ACT_DENY))
#define PACK_MIN_POLICY 104
#define PACK_MIN_LISTEN 19
#define PACK_MIN_CIDR 21

/*
 * Packing.
 */

static int
pack_pos(struct buf *b, const struct cfg_pos *pos)
{
	if (buf_add_u32(b, (uint32_t)pos->line) == -1 ||
	    buf_add_u32(b, (uint32_t)pos->col) == -1)
		return -1;
	return 0;
}

static int
pack_addr(struct buf *b, const struct cfg_addr *a)
{
	const struct sockaddr_in *sin = (const struct sockaddr_in *)&a->ss;
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&a->ss;

	switch (a->ss.ss_family) {
	case AF_INET:
		if (buf_add_u8(b, 4) == -1 ||
		    buf_add(b, &sin->sin_addr, 4) == -1)
			return -1;
		return buf_add_u16(b, ntohs(sin->sin_port));
	case AF_INET6:
		if (buf_add_u8(b, 6) == -1 ||
		    buf_add(b, &sin6->sin6_addr, 16) == -1)
			return -1;
		return buf_add_u16(b, ntohs(sin6->sin6_port));
	default:
		return -1;
	}
}

static int
pack_member(struct buf *b, const struct cfg_member *m)
{
	if (buf_add_str(b, m->host) == -1 || pack_addr(b, &m->addr) == -1 ||
	    buf_add_u32(b, m->weight) == -1 || pack_pos(b, &m->pos) == -1)
		return -1;
	return 0;
}

static int
pack_server(struct buf *b, const struct cfg_server *s, enum imapgw_role role)
{
	size_t i;

	if (buf_add_str(b, s->name) == -1 ||
	    buf_add_u32(b, (uint32_t)s->balance) == -1 ||
	    buf_add_u32(b, (uint32_t)s->tls) == -1 ||
	    buf_add_str(b, s->tls_profile) == -1 ||
	    (role == ROLE_TLSD &&
	        buf_add_u32(b, (uint32_t)s->profileidx) == -1) ||
	    buf_add_str(b, s->server_name != NULL ? s->server_name : "") ==
	        -1 ||
	    buf_add_u64(b, s->connect_timeout_ms) == -1 ||
	    buf_add_u32(b, (uint32_t)s->send_id) == -1 ||
	    buf_add_u32(b, (uint32_t)s->connect) == -1 ||
	    pack_pos(b, &s->pos) == -1 ||
	    buf_add_u32(b, (uint32_t)s->nmembers) == -1)
		return -1;
	for (i = 0; i < s->nmembers; i++)
		if (pack_member(b, &s->members[i]) == -1)
			return -1;
	return 0;
}

static int
pack_antivirus(struct buf *b, const struct cfg_antivirus *av)
{
	if (buf_add_u8(b, av->enabled ? 1 : 0) == -1 ||
	    buf_add_str(b, av->database) == -1 ||
	    buf_add_u32(b, (uint32_t)av->on_virus) == -1 ||
	    buf_add_u32(b, (uint32_t)av->on_error) == -1 ||
	    buf_add_u64(b, av->max_scan_size) == -1 ||
	    buf_add_u64(b, av->max_file_size) == -1 ||
	    buf_add_u32(b, av->max_recursion) == -1 ||
	    buf_add_u32(b, av->max_files) == -1 ||
	    buf_add_u64(b, av->max_scan_time_ms) == -1)
		return -1;
	return 0;
}

static int
pack_rules(struct buf *b, const struct cfg_rules *rs)
{
	const struct cfg_rule *r;
	size_t i;

	if (rs->nrules > CONFIG_MAX_ITEMS ||
	    buf_add_u8(b, rs->auto_detect ? 1 : 0) == -1 ||
	    buf_add_u8(b, rs->archives ? 1 : 0) == -1 ||
	    buf_add_u32(b, (uint32_t)rs->none_matched) == -1 ||
	    buf_add_u32(b, (uint32_t)rs->nrules) == -1)
		return -1;
	for (i = 0; i < rs->nrules; i++) {
		r = &rs->rules[i];
		if (buf_add_str(b, r->name) == -1 ||
		    buf_add_str(b, r->match) == -1 ||
		    buf_add_u32(b, (uint32_t)r->type) == -1 ||
		    buf_add_u32(b, (uint32_t)r->action) == -1 ||
		    buf_add_u8(b, r->alarm ? 1 : 0) == -1 ||
		    buf_add_u8(b, r->log ? 1 : 0) == -1 ||
		    pack_pos(b, &r->pos) == -1)
			return -1;
	}
	return 0;
}

/* The bytes of a file, or the index of an earlier action that has them
 * (same as the blob that same() returns for it). */
static int
pack_blob(struct buf *b, const struct config *cfg, size_t idx,
    const uint8_t *data, size_t len, size_t max,
    const uint8_t *(*same)(const struct cfg_action *, size_t *))
{
	const uint8_t *o;
	size_t j, olen;

	if (data == NULL)
		return buf_add_u8(b, BLOB_NONE);
	if (len > max)
		return -1;
	for (j = 0; j < idx; j++) {
		o = same(&cfg->actions[j], &olen);
		if (o != NULL && olen == len && memcmp(o, data, len) == 0) {
			if (buf_add_u8(b, BLOB_SAME) == -1)
				return -1;
			return buf_add_u32(b, (uint32_t)j);
		}
	}
	if (buf_add_u8(b, BLOB_BYTES) == -1 ||
	    buf_add_u32(b, (uint32_t)len) == -1)
		return -1;
	return buf_add(b, data, len);
}

static const uint8_t *
blob_apt(const struct cfg_action *a, size_t *len)
{
	*len = a->apt_blocker.len;
	return a->apt_blocker.data;
}

static const uint8_t *
blob_spam(const struct cfg_action *a, size_t *len)
{
	*len = a->spamblocker.rules_len;
	return a->spamblocker.rules_data;
}

static int
pack_apt(struct buf *b, const struct config *cfg, size_t idx)
{
	const struct cfg_apt *apt = &cfg->actions[idx].apt_blocker;
	int i;

	if (buf_add_u8(b, apt->enabled ? 1 : 0) == -1 ||
	    buf_add_str(b, apt->database) == -1)
		return -1;
	for (i = 0; i < APT_NLEVEL; i++)
		if (buf_add_u32(b, (uint32_t)apt->actions[i]) == -1)
			return -1;
	if (buf_add_u8(b, apt->missing ? 1 : 0) == -1)
		return -1;
	return pack_blob(
	    b, cfg, idx, apt->data, apt->len, PACK_MAX_APT, blob_apt);
}

static int
pack_double(struct buf *b, double d)
{
	uint64_t v;

	memcpy(&v, &d, sizeof(v));
	return buf_add_u64(b, v);
}

static int
pack_spam(struct buf *b, const struct config *cfg, size_t idx)
{
	const struct cfg_spam *sp = &cfg->actions[idx].spamblocker;
	const struct cfg_spam_exception *e;
	size_t i;

	if (sp->nexceptions > CONFIG_MAX_ITEMS ||
	    buf_add_u8(b, sp->enabled ? 1 : 0) == -1 ||
	    buf_add_u32(b, (uint32_t)sp->engine) == -1 ||
	    buf_add_str(b, sp->rules) == -1 ||
	    pack_blob(b, cfg, idx, sp->rules_data, sp->rules_len,
	        PACK_MAX_SPAM_RULES, blob_spam) == -1 ||
	    pack_addr(b, &sp->address) == -1 ||
	    buf_add_u64(b, sp->timeout_ms) == -1 ||
	    buf_add_u64(b, sp->max_size) == -1 ||
	    buf_add_u32(b, (uint32_t)sp->on_unavailable) == -1 ||
	    buf_add_str(b, sp->header) == -1)
		return -1;
	for (i = 0; i < SPAM_NCAT; i++)
		if (buf_add_u32(b, (uint32_t)sp->cat[i].action) == -1 ||
		    buf_add_str(b, sp->cat[i].tag) == -1 ||
		    pack_double(b, sp->cat[i].score) == -1)
			return -1;
	if (buf_add_u32(b, (uint32_t)sp->nexceptions) == -1)
		return -1;
	for (i = 0; i < sp->nexceptions; i++) {
		e = &sp->exceptions[i];
		if (buf_add_str(b, e->sender) == -1 ||
		    buf_add_str(b, e->recipient) == -1 ||
		    pack_pos(b, &e->pos) == -1)
			return -1;
	}
	return 0;
}

static int pack_action(
    struct buf *, const struct config *, size_t, enum imapgw_role);

static int
name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Names, sizes and modification times of the files of a ClamAV database
 * directory, in name order.  An unreadable directory adds its error. */
static void
stamp_dir(EVP_MD_CTX *ctx, const char *dir)
{
	char path[4096], **names = NULL;
	size_t n = 0, cap = 0, i;
	struct dirent *de;
	struct stat st;
	DIR *d;

	if (dir == NULL || (d = opendir(dir)) == NULL) {
		EVP_DigestUpdate(ctx, &errno, sizeof(errno));
		return;
	}
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (n == cap) {
			char **nn;

			cap = cap ? cap * 2 : 16;
			if ((nn = reallocarray(names, cap, sizeof(*nn))) ==
			    NULL)
				break;
			names = nn;
		}
		if ((names[n] = strdup(de->d_name)) == NULL)
			break;
		n++;
	}
	closedir(d);
	if (n > 0)
		qsort(names, n, sizeof(*names), name_cmp);
	for (i = 0; i < n; i++) {
		uint64_t v[3] = {0, 0, 0};

		EVP_DigestUpdate(ctx, names[i], strlen(names[i]) + 1);
		if (snprintf(path, sizeof(path), "%s/%s", dir, names[i]) <
		        (int)sizeof(path) &&
		    stat(path, &st) == 0) {
			v[0] = (uint64_t)st.st_size;
			v[1] = (uint64_t)st.st_mtim.tv_sec;
			v[2] = (uint64_t)st.st_mtim.tv_nsec;
		}
		EVP_DigestUpdate(ctx, v, sizeof(v));
		free(names[i]);
	}
	free(names);
}

/* The action's judge stamp (config.h), for netd. */
static uint64_t
judge_stamp(const struct config *cfg, size_t idx)
{
	const struct cfg_action *a = &cfg->actions[idx];
	uint8_t md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	EVP_MD_CTX *ctx;
	struct buf b;
	uint64_t v = 0;
	int i;

	buf_init(&b, 0);
	if ((ctx = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
		fatalx("cannot compute the judge stamp");
	if (pack_action(&b, cfg, idx, ROLE_SCAND) == 0)
		EVP_DigestUpdate(ctx, buf_head(&b), buf_used(&b));
	if (a->antivirus.enabled)
		stamp_dir(ctx, a->antivirus.database);
	if (EVP_DigestFinal_ex(ctx, md, &mdlen) != 1 || mdlen < 8)
		fatalx("cannot compute the judge stamp");
	EVP_MD_CTX_free(ctx);
	buf_free(&b);
	for (i = 0; i < 8; i++)
		v = v << 8 | md[i];
	return v;
}

static int
pack_action(
    struct buf *b, const struct config *cfg, size_t idx, enum imapgw_role role)
{
	const struct cfg_action *a = &cfg->actions[idx];

	if (buf_add_str(b, a->name) == -1 ||
	    buf_add_u8(b, a->builtin ? 1 : 0) == -1 ||
	    buf_add_u8(b, a->used ? 1 : 0) == -1 ||
	    buf_add_u64(b, a->general.max_email_size) == -1 ||
	    buf_add_u32(b, (uint32_t)a->general.oversize) == -1 ||
	    buf_add_u64(b, a->general.max_line_length) == -1 ||
	    buf_add_u32(b, a->general.max_archive_depth) == -1 ||
	    buf_add_u32(b, (uint32_t)a->general.consistency) == -1 ||
	    pack_antivirus(b, &a->antivirus) == -1 ||
	    buf_add_str(b, a->deny_message) == -1)
		return -1;
	if (role == ROLE_NETD)
		return buf_add_u64(b, judge_stamp(cfg, idx));
	if (role != ROLE_SCAND)
		return 0;
	if (pack_rules(b, &a->content_types) == -1 ||
	    pack_rules(b, &a->filenames) == -1 ||
	    pack_rules(b, &a->headers) == -1 || pack_apt(b, cfg, idx) == -1 ||
	    pack_spam(b, cfg, idx) == -1)
		return -1;
	return 0;
}

static int
pack_listen(struct buf *b, const struct cfg_listen *l)
{
	if (pack_addr(b, &l->addr) == -1 ||
	    buf_add_u32(b, (uint32_t)l->tls) == -1 ||
	    pack_pos(b, &l->pos) == -1)
		return -1;
	return 0;
}

static int
pack_cidr(struct buf *b, const struct cfg_cidr *c)
{
	uint8_t fam;

	switch (c->family) {
	case AF_UNSPEC:
		fam = 0;
		break;
	case AF_INET:
		fam = 4;
		break;
	case AF_INET6:
		fam = 6;
		break;
	default:
		return -1;
	}
	if (buf_add_u8(b, fam) == -1 || buf_add(b, c->addr, 16) == -1 ||
	    buf_add_u32(b, (uint32_t)c->prefix) == -1)
		return -1;
	return 0;
}

/* tls: mode, certificate names, profile (tlsd: with the indices). */
static int
pack_policy_tls(
    struct buf *b, const struct cfg_policy_tls *t, enum imapgw_role role)
{
	size_t i;

	if (t->ncerts > CONFIG_MAX_ITEMS ||
	    buf_add_u32(b, (uint32_t)t->mode) == -1 ||
	    buf_add_u32(b, (uint32_t)t->ncerts) == -1)
		return -1;
	for (i = 0; i < t->ncerts; i++)
		if (buf_add_str(b, t->certs[i]) == -1 ||
		    (role == ROLE_TLSD &&
		        buf_add_u32(b, (uint32_t)t->certidx[i]) == -1))
			return -1;
	if (buf_add_str(b, t->profile) == -1 ||
	    (role == ROLE_TLSD &&
	        buf_add_u32(b, (uint32_t)t->profileidx) == -1))
		return -1;
	if (buf_add_str(b, t->authority != NULL ? t->authority : "") == -1 ||
	    (role == ROLE_TLSD && t->authority != NULL &&
	        buf_add_u32(b, (uint32_t)t->authority_idx) == -1))
		return -1;
	return 0;
}

static int
pack_policy(struct buf *b, const struct cfg_policy *p, enum imapgw_role role)
{
	size_t i;

	if (buf_add_str(b, p->name) == -1 ||
	    pack_policy_tls(b, &p->tls, role) == -1 ||
	    buf_add_u32(b, p->original ? 1 : 0) == -1)
		return -1;
	if (role == ROLE_TLSD)
		return pack_pos(b, &p->pos);
	if (buf_add_u32(b, (uint32_t)p->nlisten) == -1)
		return -1;
	for (i = 0; i < p->nlisten; i++)
		if (pack_listen(b, &p->listen[i]) == -1)
			return -1;
	if (buf_add_u32(b, (uint32_t)p->nfrom) == -1)
		return -1;
	for (i = 0; i < p->nfrom; i++)
		if (pack_cidr(b, &p->from[i]) == -1)
			return -1;
	if (buf_add_str(b, p->to) == -1 ||
	    buf_add_u32(b, (uint32_t)p->server) == -1 ||
	    buf_add_u32(b, (uint32_t)p->disposition) == -1 ||
	    buf_add_str(b, p->action) == -1 ||
	    buf_add_u32(b, (uint32_t)p->actionidx) == -1 ||
	    buf_add_u64(b, p->idle_timeout_ms) == -1 ||
	    pack_pos(b, &p->pos) == -1)
		return -1;
	return 0;
}

static int
pack_servers(struct buf *b, const struct config *cfg, enum imapgw_role role)
{
	size_t i;

	if (buf_add_u32(b, (uint32_t)cfg->nservers) == -1)
		return -1;
	for (i = 0; i < cfg->nservers; i++)
		if (pack_server(b, &cfg->servers[i], role) == -1)
			return -1;
	return 0;
}

static int
pack_actions(struct buf *b, const struct config *cfg, enum imapgw_role role)
{
	size_t i;

	if (buf_add_u32(b, (uint32_t)cfg->nactions) == -1)
		return -1;
	for (i = 0; i < cfg->nactions; i++)
		if (pack_action(b, cfg, i, role) == -1)
			return -1;
	return 0;
}

static int
pack_policies(struct buf *b, const struct config *cfg, enum imapgw_role role)
{
	size_t i;

	if (buf_add_u32(b, (uint32_t)cfg->npolicies) == -1)
		return -1;
	for (i = 0; i < cfg->npolicies; i++)
		if (pack_policy(b, &cfg->policies[i], role) == -1)
			return -1;
	return 0;
}

/* A file's bytes that must be there: u32 length, the bytes. */
static int
pack_bytes(struct buf *b, const uint8_t *data, size_t len)
{
	if (len > UINT32_MAX || buf_add_u32(b, (uint32_t)len) == -1)
		return -1;
	return buf_add(b, data, len);
}

static int
pack_profiles(struct buf *b, const struct config *cfg)
{
	const struct cfg_tls_profile *p;
	size_t i;

	if (cfg->nprofiles > CONFIG_MAX_ITEMS ||
	    buf_add_u32(b, (uint32_t)cfg->nprofiles) == -1)
		return -1;
	for (i = 0; i < cfg->nprofiles; i++) {
		p = &cfg->profiles[i];
		if (buf_add_str(b, p->name) == -1 ||
		    buf_add_u32(b, (uint32_t)p->min_version) == -1 ||
		    buf_add_str(b, p->ciphers ? p->ciphers : "") == -1 ||
		    buf_add_str(b, p->ciphersuites ? p->ciphersuites : "") ==
		        -1 ||
		    buf_add_u8(b, p->compliant_only ? 1 : 0) == -1 ||
		    buf_add_u8(b, p->verify_peer ? 1 : 0) == -1 ||
		    buf_add_str(b, p->ca_file ? p->ca_file : "") == -1 ||
		    buf_add_u8(b, p->ca_pem != NULL ? BLOB_BYTES : BLOB_NONE) ==
		        -1 ||
		    (p->ca_pem != NULL &&
		        pack_bytes(b, p->ca_pem, p->ca_len) == -1) ||
		    buf_add_u8(b, p->session_cache ? 1 : 0) == -1 ||
		    buf_add_u64(b, p->session_timeout_ms) == -1 ||
		    pack_pos(b, &p->pos) == -1)
			return -1;
	}
	return 0;
}

static int
pack_certs(struct buf *b, const struct config *cfg)
{
	const struct cfg_cert *c;
	size_t i;

	if (cfg->ncerts > CONFIG_MAX_ITEMS ||
	    buf_add_u32(b, (uint32_t)cfg->ncerts) == -1)
		return -1;
	for (i = 0; i < cfg->ncerts; i++) {
		c = &cfg->certs[i];
		if (buf_add_str(b, c->name) == -1 ||
		    buf_add_str(b, c->cert) == -1 ||
		    buf_add_str(b, c->key) == -1 ||
		    buf_add_str(b, c->ocsp ? c->ocsp : "") == -1 ||
		    pack_pos(b, &c->pos) == -1)
			return -1;
	}
	return 0;
}

/*
 * The certificates' bytes, last: the parent reads the files now (an
 * unpacked config has them already), reserves the room for all of them,
 * so that adding them never moves the buffer, and wipes its copies.
 */
static int
pack_cert_bytes(struct buf *b, const struct config *cfg)
{
	const struct cfg_cert *c;
	struct cfg_cert *f = NULL;
	size_t i, need = 0;
	int rv = -1;

	if (cfg->ncerts > 0 && (f = calloc(cfg->ncerts, sizeof(*f))) == NULL)
		return -1;
	for (i = 0; i < cfg->ncerts; i++) {
		c = &cfg->certs[i];
		if (c->key_pem == NULL && config_cert_read(c, &f[i]) == -1) {
			log_warn("certificate '%s': cannot read %s or %s%s%s",
			    c->name, c->cert, c->key, c->ocsp ? " or " : "",
			    c->ocsp ? c->ocsp : "");
			goto done;
		}
		if (c->key_pem == NULL)
			c = &f[i];
		need += 13 + c->cert_len + c->key_len + c->ocsp_len;
	}
	if (buf_reserve(b, need) == -1)
		goto done;
	for (i = 0; i < cfg->ncerts; i++) {
		c = cfg->certs[i].key_pem != NULL ? &cfg->certs[i] : &f[i];
		if (pack_bytes(b, c->cert_pem, c->cert_len) == -1 ||
		    pack_bytes(b, c->key_pem, c->key_len) == -1 ||
		    buf_add_u8(b, c->ocsp_der ? BLOB_BYTES : BLOB_NONE) == -1 ||
		    (c->ocsp_der != NULL &&
		        pack_bytes(b, c->ocsp_der, c->ocsp_len) == -1))
			goto done;
	}
	rv = 0;
done:
	for (i = 0; f != NULL && i < cfg->ncerts; i++)
		config_cert_wipe(&f[i]);
	free(f);
	return rv;
}

int
config_pack(const struct config *cfg, enum imapgw_role role, struct buf *b)
{
	if (role != ROLE_NETD && role != ROLE_SCAND && role != ROLE_TLSD)
		return -1;
	if (cfg->nservers > CONFIG_MAX_ITEMS ||
	    cfg->nactions > CONFIG_MAX_ITEMS ||
	    cfg->npolicies > CONFIG_MAX_ITEMS)
		return -1;
	if (buf_add_u32(b, PACK_MAGIC) == -1 ||
	    buf_add_u32(b, PACK_VERSION) == -1 ||
	    buf_add_u32(b, (uint32_t)role) == -1 ||
	    buf_add_u32(b, cfg->generation) == -1 ||
	    buf_add_u32(b, (uint32_t)cfg->log_target) == -1 ||
	    buf_add_u32(b, (uint32_t)cfg->log_format) == -1 ||
	    buf_add_u32(b, (uint32_t)cfg->log_level) == -1)
		return -1;
	if ((role == ROLE_NETD || role == ROLE_SCAND) &&
	    buf_add_str(b, cfg->state_dir != NULL ? cfg->state_dir : "") == -1)
		return -1;
	if (role == ROLE_NETD && (buf_add_u64(b, cfg->vcache_size) == -1 ||
	                             pack_servers(b, cfg, role) == -1))
		return -1;
	if ((role == ROLE_NETD || role == ROLE_SCAND) &&
	    pack_actions(b, cfg, role) == -1)
		return -1;
	if (role == ROLE_NETD && pack_policies(b, cfg, role) == -1)
		return -1;
	if (role == ROLE_TLSD &&
	    (pack_profiles(b, cfg) == -1 || pack_certs(b, cfg) == -1 ||
	        pack_servers(b, cfg, role) == -1 ||
	        pack_policies(b, cfg, role) == -1 ||
	        pack_cert_bytes(b, cfg) == -1))
		return -1;
	return 0;
}

/*
 * Unpacking.  Every function returns -1 (and leaves r->err set) on the
 * first thing that is wrong.  Items are counted before they are read, so
 * that config_free() also frees a half-read one.
 */

static int
unpack_fail(struct reader *r)
{
	r->err = 1;
	return -1;
}

/* A count of items of at least min bytes each that the rest can hold. */
static int
unpack_count(struct reader *r, size_t min, size_t *n)
{
	uint32_t v = rd_u32(r);

	if (r->err || v > CONFIG_MAX_ITEMS || v > r->left / min)
		return unpack_fail(r);
	*n = v;
	return 0;
}

/* An enum value 0..max. */
static int
unpack_enum(struct reader *r, uint32_t max, int *out)
{
	uint32_t v = rd_u32(r);

	if (r->err || v > max)
		return unpack_fail(r);
	*out = (int)v;
	return 0;
}

/* A non-empty string. */
static int
unpack_name(struct reader *r, char **out)
{
	if ((*out = rd_str(r, CONFIG_MAX_STR)) == NULL)
		return -1;
	if ((*out)[0] == '\0')
		return unpack_fail(r);
	return 0;
}

static int
unpack_pos(struct reader *r, struct cfg_pos *pos)
{
	uint32_t line = rd_u32(r), col = rd_u32(r);

	if (r->err || line > INT32_MAX || col > INT32_MAX)
		return unpack_fail(r);
	pos->line = (int)line;
	pos->col = (int)col;
	return 0;
}

static int
unpack_addr(struct reader *r, struct cfg_addr *a)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)&a->ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a->ss;
	uint8_t fam = rd_u8(r);
	uint16_t port;

	memset(a, 0, sizeof(*a));
	if (fam == 4) {
		sin->sin_family = AF_INET;
		rd_data(r, &sin->sin_addr, 4);
		a->len = sizeof(*sin);
	} else if (fam == 6) {
		sin6->sin6_family = AF_INET6;
		rd_data(r, &sin6->sin6_addr, 16);
		a->len = sizeof(*sin6);
	} else
		return unpack_fail(r);
	port = rd_u16(r);
	if (r->err || port == 0)
		return unpack_fail(r);
	if (fam == 4)
		sin->sin_port = htons(port);
	else
		sin6->sin6_port = htons(port);
	addr_text((struct sockaddr *)&a->ss, a->text, sizeof(a->text));
	return 0;
}

static int
unpack_member(struct reader *r, struct cfg_member *m)
{
	if (unpack_name(r, &m->host) == -1 || unpack_addr(r, &m->addr) == -1)
		return -1;
	m->weight = rd_u32(r);
	if (r->err || m->weight < 1 || m->weight > 100)
		return unpack_fail(r);
	return unpack_pos(r, &m->pos);
}

static int unpack_index(struct reader *, size_t, int *);
static int unpack_opt(struct reader *, char **);

static int
unpack_server(struct reader *r, const struct config *cfg, struct cfg_server *s)
{
	size_t i, n;

	if (unpack_name(r, &s->name) == -1 ||
	    unpack_enum(r, BALANCE_LEAST_CONN, &s->balance) == -1 ||
	    unpack_enum(r, SRV_TLS_IMPLICIT, &s->tls) == -1 ||
	    unpack_name(r, &s->tls_profile) == -1)
		return -1;
	s->profileidx = -1;
	if (cfg->role == ROLE_TLSD &&
	    (unpack_index(r, cfg->nprofiles, &s->profileidx) == -1 ||
	        strcmp(cfg->profiles[s->profileidx].name, s->tls_profile) != 0))
		return unpack_fail(r);
	if (unpack_opt(r, &s->server_name) == -1)
		return -1;
	if (s->server_name != NULL && !config_host_name_ok(s->server_name))
		return unpack_fail(r);
	s->connect_timeout_ms = rd_u64(r);
	if (r->err || s->connect_timeout_ms == 0)
		return unpack_fail(r);
	if (unpack_enum(r, 1, &s->send_id) == -1 ||
	    unpack_enum(r, SRV_CONNECT_LAZY, &s->connect) == -1)
		return -1;
	if (unpack_pos(r, &s->pos) == -1 ||
	    unpack_count(r, PACK_MIN_MEMBER, &n) == -1)
		return -1;
	if (n == 0 || (s->members = calloc(n, sizeof(*s->members))) == NULL)
		return unpack_fail(r);
	for (i = 0; i < n; i++) {
		s->nmembers++;
		if (unpack_member(r, &s->members[i]) == -1)
			return -1;
	}
	return 0;
}

/* An action the loader accepts for a key: one of the ACTS_* bits. */
static int
unpack_act(struct reader *r, unsigned mask, int *out)
{
	uint32_t v = rd_u32(r);

	if (r->err || v > ACT_HEADER || !(mask & (1u << v)))
		return unpack_fail(r);
	*out = (int)v;
	return 0;
}

/* A boolean: u8 0 or 1. */
static int
unpack_flag(struct reader *r, int *out)
{
	uint8_t v = rd_u8(r);

	if (r->err || v > 1)
		return unpack_fail(r);
	*out = v;
	return 0;
}

/* A string that may be absent (empty): NULL then. */
static int
unpack_opt(struct reader *r, char **out)
{
	if ((*out = rd_str(r, CONFIG_MAX_STR)) == NULL)
		return -1;
	if ((*out)[0] == '\0') {
		free(*out);
		*out = NULL;
	}
	return 0;
}

static int
unpack_antivirus(struct reader *r, struct cfg_antivirus *av)
{
	uint8_t enabled = rd_u8(r);

	if (enabled > 1 || unpack_name(r, &av->database) == -1 ||
	    av->database[0] != '/' ||
	    unpack_act(r, ACTS_ON_VIRUS, &av->on_virus) == -1 ||
	    unpack_act(r, ACTS_ON_ERROR, &av->on_error) == -1)
		return unpack_fail(r);
	av->enabled = enabled;
	av->max_scan_size = rd_u64(r);
	av->max_file_size = rd_u64(r);
	av->max_recursion = rd_u32(r);
	av->max_files = rd_u32(r);
	av->max_scan_time_ms = rd_u64(r);
	if (r->err || av->max_scan_size < 1024 ||
	    av->max_scan_size > CFG_AV_MAX_SIZE || av->max_file_size < 1024 ||
	    av->max_file_size > CFG_AV_MAX_SIZE || av->max_recursion < 1 ||
	    av->max_recursion > CFG_AV_MAX_RECURSION || av->max_files < 1 ||
	    av->max_files > CFG_AV_MAX_FILES || av->max_scan_time_ms == 0 ||
	    av->max_scan_time_ms > CFG_AV_MAX_TIME_MS)
		return unpack_fail(r);
	return 0;
}

static int
unpack_rule(struct reader *r, unsigned acts, struct cfg_rule *rule)
{
	if (unpack_name(r, &rule->name) == -1 ||
	    unpack_name(r, &rule->match) == -1 ||
	    unpack_enum(r, MATCH_REGEX, &rule->type) == -1 ||
	    unpack_act(r, acts, &rule->action) == -1 ||
	    unpack_flag(r, &rule->alarm) == -1 ||
	    unpack_flag(r, &rule->log) == -1)
		return -1;
	return unpack_pos(r, &rule->pos);
}

static int
unpack_rules(struct reader *r, unsigned acts, struct cfg_rules *rs)
{
	size_t i, n;

	if (unpack_flag(r, &rs->auto_detect) == -1 ||
	    unpack_flag(r, &rs->archives) == -1 ||
	    unpack_act(r, acts, &rs->none_matched) == -1 ||
	    unpack_count(r, PACK_MIN_RULE, &n) == -1)
		return -1;
	if (n && (rs->rules = calloc(n, sizeof(*rs->rules))) == NULL)
		return unpack_fail(r);
	for (i = 0; i < n; i++) {
		rs->nrules++;
		if (unpack_rule(r, acts, &rs->rules[i]) == -1)
			return -1;
	}
	return 0;
}

/* A file's bytes (NUL-terminated, the NUL not counted), NULL if none. */
static int
unpack_blob(struct reader *r, const struct config *cfg, size_t idx, size_t max,
    const uint8_t *(*same)(const struct cfg_action *, size_t *), uint8_t **data,
    size_t *len)
{
	const uint8_t *src;
	uint8_t kind = rd_u8(r);
	uint32_t v;
	size_t n;

	if (r->err)
		return -1;
	switch (kind) {
	case BLOB_NONE:
		return 0;
	case BLOB_BYTES:
		v = rd_u32(r);
		if (r->err || v > max || (src = rd_ptr(r, v)) == NULL)
			return unpack_fail(r);
		n = v;
		break;
	case BLOB_SAME:
		v = rd_u32(r);
		if (r->err || v >= idx ||
		    (src = same(&cfg->actions[v], &n)) == NULL)
			return unpack_fail(r);
		break;
	default:
		return unpack_fail(r);
	}
	if ((*data = malloc(n + 1)) == NULL)
		return unpack_fail(r);
	memcpy(*data, src, n);
	(*data)[n] = '\0';
	*len = n;
	return 0;
}

static int
unpack_apt(
    struct reader *r, const struct config *cfg, size_t idx, struct cfg_apt *apt)
{
	int i;

	if (unpack_flag(r, &apt->enabled) == -1 ||
	    unpack_name(r, &apt->database) == -1)
		return -1;
	if (apt->database[0] != '/')
		return unpack_fail(r);
	for (i = 0; i < APT_NLEVEL; i++)
		if (unpack_act(r, ACTS_RULE, &apt->actions[i]) == -1)
			return -1;
	if (unpack_flag(r, &apt->missing) == -1 ||
	    unpack_blob(r, cfg, idx, PACK_MAX_APT, blob_apt, &apt->data,
	        &apt->len) == -1)
		return -1;
	if (apt->missing && apt->data != NULL)
		return unpack_fail(r);
	return 0;
}

/* RFC 5322 ftext, as the loader checks it. */
static int
unpack_field_name(const char *s)
{
	size_t i;

	for (i = 0; s[i] != '\0'; i++)
		if ((unsigned char)s[i] < 33 || (unsigned char)s[i] > 126 ||
		    s[i] == ':')
			return -1;
	return i > 0 && i <= PACK_MAX_HEADER ? 0 : -1;
}

static int
unpack_cat(struct reader *r, struct cfg_spam_cat *c)
{
	uint64_t v;

	if (unpack_act(r, ACTS_SPAM, &c->action) == -1 ||
	    unpack_name(r, &c->tag) == -1)
		return -1;
	if (strlen(c->tag) > PACK_MAX_TAG || strpbrk(c->tag, "\r\n") != NULL)
		return unpack_fail(r);
	v = rd_u64(r);
	memcpy(&c->score, &v, sizeof(c->score));
	if (r->err || !isfinite(c->score) || c->score < 0)
		return unpack_fail(r);
	return 0;
}

static int
unpack_exception(struct reader *r, struct cfg_spam_exception *e)
{
	if (unpack_opt(r, &e->sender) == -1 ||
	    unpack_opt(r, &e->recipient) == -1 || unpack_pos(r, &e->pos) == -1)
		return -1;
	if (e->sender == NULL && e->recipient == NULL)
		return unpack_fail(r);
	return 0;
}

static int
unpack_spam(
    struct reader *r, const struct config *cfg, size_t idx, struct cfg_spam *sp)
{
	const struct cfg_spam_cat *c = sp->cat;
	size_t i, n;

	if (unpack_flag(r, &sp->enabled) == -1 ||
	    unpack_enum(r, SPAM_ENGINE_RSPAMD, &sp->engine) == -1 ||
	    unpack_opt(r, &sp->rules) == -1)
		return -1;
	if (sp->rules != NULL && sp->rules[0] != '/')
		return unpack_fail(r);
	if (unpack_blob(r, cfg, idx, PACK_MAX_SPAM_RULES, blob_spam,
	        &sp->rules_data, &sp->rules_len) == -1)
		return -1;
	if (sp->rules_data != NULL && sp->rules == NULL)
		return unpack_fail(r);
	if (unpack_addr(r, &sp->address) == -1)
		return -1;
	sp->timeout_ms = rd_u64(r);
	sp->max_size = rd_u64(r);
	if (r->err || sp->timeout_ms == 0 ||
	    sp->timeout_ms > PACK_MAX_SPAM_TIMEOUT || sp->max_size < 1024 ||
	    sp->max_size > CFG_AV_MAX_SIZE)
		return unpack_fail(r);
	if (unpack_act(r, ACTS_UNAVAILABLE, &sp->on_unavailable) == -1 ||
	    unpack_name(r, &sp->header) == -1)
		return -1;
	if (unpack_field_name(sp->header) == -1)
		return unpack_fail(r);
	for (i = 0; i < SPAM_NCAT; i++)
		if (unpack_cat(r, &sp->cat[i]) == -1)
			return -1;
	if (c[SPAM_CONFIRMED].score < c[SPAM_BULK].score ||
	    c[SPAM_BULK].score < c[SPAM_SUSPECT].score)
		return unpack_fail(r);
	if (unpack_count(r, PACK_MIN_EXCEPTION, &n) == -1)
		return -1;
	if (n && (sp->exceptions = calloc(n, sizeof(*sp->exceptions))) == NULL)
		return unpack_fail(r);
	for (i = 0; i < n; i++) {
		sp->nexceptions++;
		if (unpack_exception(r, &sp->exceptions[i]) == -1)
			return -1;
	}
	return 0;
}

static int
unpack_action(struct reader *r, const struct config *cfg, size_t idx)
{
	struct cfg_action *a = &cfg->actions[idx];
	struct cfg_general *g = &a->general;
	uint8_t builtin, used;

	if (unpack_name(r, &a->name) == -1)
		return -1;
	builtin = rd_u8(r);
	used = rd_u8(r);
	g->max_email_size = rd_u64(r);
	if (builtin > 1 || used > 1 ||
	    unpack_act(r, ACTS_OVERSIZE, &g->oversize) == -1)
		return unpack_fail(r);
	a->builtin = builtin;
	a->used = used;
	g->max_line_length = rd_u64(r);
	g->max_archive_depth = rd_u32(r);
	if (r->err || g->max_email_size == 0 || g->max_line_length == 0 ||
	    g->max_archive_depth > PACK_MAX_ARCHIVE_DEPTH ||
	    unpack_enum(r, CONSIST_LAZY, &g->consistency) == -1)
		return unpack_fail(r);
	if (unpack_antivirus(r, &a->antivirus) == -1 ||
	    unpack_name(r, &a->deny_message) == -1)
		return -1;
	if (cfg->role == ROLE_NETD) {
		a->judge_stamp = rd_u64(r);
		return r->err ? unpack_fail(r) : 0;
	}
	if (cfg->role != ROLE_SCAND)
		return 0;
	if (unpack_rules(r, ACTS_RULE, &a->content_types) == -1 ||
	    unpack_rules(r, ACTS_RULE, &a->filenames) == -1 ||
	    unpack_rules(r, ACTS_HEADER, &a->headers) == -1 ||
	    unpack_apt(r, cfg, idx, &a->apt_blocker) == -1)
		return -1;
	return unpack_spam(r, cfg, idx, &a->spamblocker);
}

static int
unpack_listen(struct reader *r, struct cfg_listen *l)
{
	if (unpack_addr(r, &l->addr) == -1 ||
	    unpack_enum(r, LISTEN_TLS_IMPLICIT, &l->tls) == -1)
		return -1;
	return unpack_pos(r, &l->pos);
}

static int
unpack_cidr(struct reader *r, struct cfg_cidr *c)
{
	char ntop[INET6_ADDRSTRLEN];
	uint8_t fam = rd_u8(r);
	int max;

	rd_data(r, c->addr, sizeof(c->addr));
	c->prefix = (int)rd_u32(r);
	if (r->err)
		return -1;
	if (fam == 0 && c->prefix == 0) {
		c->family = AF_UNSPEC;
		memset(c->addr, 0, sizeof(c->addr));
		snprintf(c->text, sizeof(c->text), "any");
		return 0;
	}
	if (fam != 4 && fam != 6)
		return unpack_fail(r);
	c->family = fam == 4 ? AF_INET : AF_INET6;
	max = fam == 4 ? 32 : 128;
	if (c->prefix < 0 || c->prefix > max)
		return unpack_fail(r);
	inet_ntop(c->family, c->addr, ntop, sizeof(ntop));
	snprintf(c->text, sizeof(c->text), "%s/%d", ntop, c->prefix);
	return 0;
}

static int
unpack_listens(struct reader *r, struct cfg_policy *p)
{
	size_t i, n;

	if (unpack_count(r, PACK_MIN_LISTEN, &n) == -1)
		return -1;
	if (n == 0 || (p->listen = calloc(n, sizeof(*p->listen))) == NULL)
		return unpack_fail(r);
	for (i = 0; i < n; i++) {
		p->nlisten++;
		if (unpack_listen(r, &p->listen[i]) == -1)
			return -1;
	}
	return 0;
}

static int
unpack_froms(struct reader *r, struct cfg_policy *p)
{
	size_t i, n;

	if (unpack_count(r, PACK_MIN_CIDR, &n) == -1)
		return -1;
	if (n == 0 || (p->from = calloc(n, sizeof(*p->from))) == NULL)
		return unpack_fail(r);
	for (i = 0; i < n; i++) {
		p->nfrom++;
		if (unpack_cidr(r, &p->from[i]) == -1)
			return -1;
	}
	return 0;
}

/* An index 0..n-1. */
static int
unpack_index(struct reader *r, size_t n, int *out)
{
	uint32_t v = rd_u32(r);

	if (r->err || v >= n)
		return unpack_fail(r);
	*out = (int)v;
	return 0;
}

/* tls: names, and for tlsd indices that must agree with them. */
static int
unpack_policy_tls(
    struct reader *r, const struct config *cfg, struct cfg_policy_tls *t)
{
	int tlsd = cfg->role == ROLE_TLSD;
	size_t i, n;

	if (unpack_enum(r, TLS_MODE_REQUIRED, &t->mode) == -1 ||
	    unpack_count(r, tlsd ? 9 : 5, &n) == -1)
		return -1;
	if (n && ((t->certs = calloc(n, sizeof(*t->certs))) == NULL ||
	             (t->certidx = calloc(n, sizeof(*t->certidx))) == NULL))
		return unpack_fail(r);
	for (i = 0; i < n; i++) {
		t->ncerts++;
		t->certidx[i] = -1;
		if (unpack_name(r, &t->certs[i]) == -1)
			return -1;
		if (tlsd &&
		    (unpack_index(r, cfg->ncerts, &t->certidx[i]) == -1 ||
		        strcmp(cfg->certs[t->certidx[i]].name, t->certs[i]) !=
		            0))
			return unpack_fail(r);
	}
	t->profileidx = -1;
	if (unpack_name(r, &t->profile) == -1)
		return -1;
	if (tlsd &&
	    (unpack_index(r, cfg->nprofiles, &t->profileidx) == -1 ||
	        strcmp(cfg->profiles[t->profileidx].name, t->profile) != 0))
		return unpack_fail(r);
	t->authority_idx = -1;
	if (unpack_opt(r, &t->authority) == -1)
		return -1;
	if (tlsd && t->authority != NULL &&
	    (unpack_index(r, cfg->ncerts, &t->authority_idx) == -1 ||
	        strcmp(cfg->certs[t->authority_idx].name, t->authority) != 0))
		return unpack_fail(r);
	/* The loader's rule: TLS needs a certificate. */
	if (n == 0 && t->mode != TLS_MODE_DISABLED)
		return unpack_fail(r);
	return 0;
}

static int
unpack_policy(struct reader *r, const struct config *cfg, struct cfg_policy *p)
{
	size_t i;

	p->server = p->actionidx = -1;
	if (unpack_name(r, &p->name) == -1 ||
	    unpack_policy_tls(r, cfg, &p->tls) == -1 ||
	    unpack_enum(r, 1, &p->original) == -1)
		return -1;
	if (cfg->role == ROLE_TLSD)
		return unpack_pos(r, &p->pos);
	if (unpack_listens(r, p) == -1 || unpack_froms(r, p) == -1 ||
	    unpack_name(r, &p->to) == -1 ||
	    unpack_index(r, cfg->nservers, &p->server) == -1 ||
	    unpack_enum(r, DISP_DENY_RESET, &p->disposition) == -1 ||
	    unpack_name(r, &p->action) == -1 ||
	    unpack_index(r, cfg->nactions, &p->actionidx) == -1)
		return -1;
	/* The names and the indices must agree. */
	if (strcmp(cfg->servers[p->server].name, p->to) != 0 ||
	    strcmp(cfg->actions[p->actionidx].name, p->action) != 0)
		return unpack_fail(r);
	p->idle_timeout_ms = rd_u64(r);
	if (r->err || p->idle_timeout_ms < 1000)
		return unpack_fail(r);
	for (i = 0; i < p->nlisten; i++)
		if (p->listen[i].tls == LISTEN_TLS_IMPLICIT &&
		    p->tls.ncerts == 0 && p->tls.authority == NULL)
			return unpack_fail(r);
	return unpack_pos(r, &p->pos);
}

static int
unpack_servers(struct reader *r, struct config *cfg)
{
	size_t i, n;

	if (unpack_count(r, PACK_MIN_SERVER, &n) == -1)
		return -1;
	if (n && (cfg->servers = calloc(n, sizeof(*cfg->servers))) == NULL)
		return unpack_fail(r);
	for (i = 0; i < n; i++) {
		cfg->nservers++;
		if (unpack_server(r, cfg, &cfg->servers[i]) == -1)
			return -1;
	}
	return 0;
}

static int
unpack_actions(struct reader *r, struct config *cfg)
{
	size_t i, n;

	if (unpack_count(r, PACK_MIN_ACTION, &n) == -1)
		return -1;
	if (n && (cfg->actions = calloc(n, sizeof(*cfg->actions))) == NULL)
		return unpack_fail(r);
	for (i = 0; i < n; i++) {
		cfg->nactions++;
		if (unpack_action(r, cfg, i) == -1)
			return -1;
	}
	return 0;
}

static int
unpack_policies(struct reader *r, struct config *cfg)
{
	size_t i, n;

	if (unpack_count(r,
	        cfg->role == ROLE_TLSD ? PACK_MIN_TLSD_POLICY : PACK_MIN_POLICY,
	        &n) == -1)
		return -1;
	if (n && (cfg->policies = calloc(n, sizeof(*cfg->policies))) == NULL)
		return unpack_fail(r);
	for (i = 0; i < n; i++) {
		cfg->npolicies++;
		if (unpack_policy(r, cfg, &cfg->policies[i]) == -1)
			return -1;
	}
	return 0;
}

static int
unpack_netd(struct reader *r, struct config *cfg)
{
	cfg->vcache_size = rd_u64(r);
	if (r->err || cfg->vcache_size > CFG_VCACHE_MAX ||
	    (cfg->vcache_size != 0 && cfg->vcache_size < CFG_VCACHE_MIN))
		return unpack_fail(r);
	return unpack_servers(r, cfg);
}

/* A file's bytes that must be there (NUL-terminated, not counted). */
static int
unpack_bytes(struct reader *r, size_t max, uint8_t **data, size_t *len)
{
	const uint8_t *src;
	uint32_t v = rd_u32(r);

	if (r->err || v == 0 || v > max || (src = rd_ptr(r, v)) == NULL ||
	    (*data = malloc((size_t)v + 1)) == NULL)
		return unpack_fail(r);
	memcpy(*data, src, v);
	(*data)[v] = '\0';
	*len = v;
	return 0;
}

/* An absolute file name, or none. */
static int
unpack_path(struct reader *r, char **out, int optional)
{
	if ((optional ? unpack_opt(r, out) : unpack_name(r, out)) == -1)
		return -1;
	if (*out != NULL && (*out)[0] != '/')
		return unpack_fail(r);
	return 0;
}

static int
unpack_profile(struct reader *r, const struct config *cfg, size_t idx)
{
	struct cfg_tls_profile *p = &cfg->profiles[idx];
	uint32_t v;
	uint8_t kind;
	size_t j;

	if (unpack_name(r, &p->name) == -1)
		return -1;
	for (j = 0; j < idx; j++)
		if (strcmp(cfg->profiles[j].name, p->name) == 0)
			return unpack_fail(r);
	if (idx == 0 && strcmp(p->name, "default") != 0)
		return unpack_fail(r);
	v = rd_u32(r);
	if (r->err || v < TLS1_VERSION || v > TLS1_3_VERSION)
		return unpack_fail(r);
	p->min_version = (int)v;
	if (unpack_opt(r, &p->ciphers) == -1 ||
	    unpack_opt(r, &p->ciphersuites) == -1 ||
	    unpack_flag(r, &p->compliant_only) == -1 ||
	    unpack_flag(r, &p->verify_peer) == -1 ||
	    unpack_path(r, &p->ca_file, 1) == -1)
		return -1;
	kind = rd_u8(r);
	if (r->err || (kind != BLOB_NONE && kind != BLOB_BYTES) ||
	    (kind == BLOB_BYTES && unpack_bytes(r, CFG_TLS_MAX_CA, &p->ca_pem,
	                               &p->ca_len) == -1) ||
	    (p->ca_file != NULL && p->ca_pem == NULL))
		return unpack_fail(r);
	if (unpack_flag(r, &p->session_cache) == -1)
		return -1;
	p->session_timeout_ms = rd_u64(r);
	if (r->err || p->session_timeout_ms < 1000 ||
	    p->session_timeout_ms > CFG_TLS_MAX_SESSION_TIMEOUT_MS)
		return unpack_fail(r);
	return unpack_pos(r, &p->pos);
}

static int
unpack_cert(struct reader *r, const struct config *cfg, size_t idx)
{
	struct cfg_cert *c = &cfg->certs[idx];
	size_t j;

	if (unpack_name(r, &c->name) == -1 ||
	    unpack_path(r, &c->cert, 0) == -1 ||
	    unpack_path(r, &c->key, 0) == -1 ||
	    unpack_path(r, &c->ocsp, 1) == -1)
		return -1;
	for (j = 0; j < idx; j++)
		if (strcmp(cfg->certs[j].name, c->name) == 0)
			return unpack_fail(r);
	return unpack_pos(r, &c->pos);
}

/* The certificates' bytes: cert and key always, the OCSP response if
 * the certificate has one. */
static int
unpack_cert_bytes(struct reader *r, struct cfg_cert *c)
{
	uint8_t kind;

	if (unpack_bytes(r, CFG_TLS_MAX_FILE, &c->cert_pem, &c->cert_len) ==
	        -1 ||
	    unpack_bytes(r, CFG_TLS_MAX_FILE, &c->key_pem, &c->key_len) == -1)
		return -1;
	kind = rd_u8(r);
	if (r->err || kind != (c->ocsp != NULL ? BLOB_BYTES : BLOB_NONE))
		return unpack_fail(r);
	if (kind == BLOB_BYTES)
		return unpack_bytes(
		    r, CFG_TLS_MAX_FILE, &c->ocsp_der, &c->ocsp_len);
	return 0;
}

static int
unpack_tlsd(struct reader *r, struct config *cfg)
{
	size_t i, n;

	if (unpack_count(r, PACK_MIN_PROFILE, &n) == -1)
		return -1;
	if (n == 0 ||
	    (cfg->profiles = calloc(n, sizeof(*cfg->profiles))) == NULL)
		return unpack_fail(r);
	for (i = 0; i < n; i++) {
		cfg->nprofiles++;
		if (unpack_profile(r, cfg, i) == -1)
			return -1;
	}
	if (unpack_count(r, PACK_MIN_CERT, &n) == -1)
		return -1;
	if (n && (cfg->certs = calloc(n, sizeof(*cfg->certs))) == NULL)
		return unpack_fail(r);
	for (i = 0; i < n; i++) {
		cfg->ncerts++;
		if (unpack_cert(r, cfg, i) == -1)
			return -1;
	}
	if (unpack_servers(r, cfg) == -1 || unpack_policies(r, cfg) == -1)
		return -1;
	for (i = 0; i < cfg->ncerts; i++)
		if (unpack_cert_bytes(r, &cfg->certs[i]) == -1)
			return -1;
	return 0;
}

static int
unpack_header(struct reader *r, struct config *cfg)
{
	uint32_t magic = rd_u32(r), version = rd_u32(r);

	if (r->err || magic != PACK_MAGIC || version != PACK_VERSION)
		return unpack_fail(r);
	if (unpack_enum(r, ROLE_TLSD, &cfg->role) == -1 ||
	    cfg->role == ROLE_PARENT)
		return unpack_fail(r);
	cfg->generation = rd_u32(r);
	if (unpack_enum(r, LOGT_STDERR, &cfg->log_target) == -1 ||
	    unpack_enum(r, LOGF_JSON, &cfg->log_format) == -1 ||
	    unpack_enum(r, LOG_DEBUG, &cfg->log_level) == -1 ||
	    cfg->log_level < LOG_ERR)
		return unpack_fail(r);
	return 0;
}

struct config *
config_unpack(const void *data, size_t len)
{
	struct config *cfg;
	struct reader r;

	if (data == NULL || (cfg = calloc(1, sizeof(*cfg))) == NULL)
		return NULL;
	rd_init(&r, data, len);
	if ((cfg->file = strdup("<packed>")) == NULL)
		r.err = 1;
	if (!r.err && unpack_header(&r, cfg) == 0) {
		if (cfg->role == ROLE_NETD || cfg->role == ROLE_SCAND)
			unpack_name(&r, &cfg->state_dir);
		if (cfg->role == ROLE_NETD)
			unpack_netd(&r, cfg);
		if (cfg->role == ROLE_NETD || cfg->role == ROLE_SCAND)
			unpack_actions(&r, cfg);
		if (cfg->role == ROLE_NETD)
			unpack_policies(&r, cfg);
		if (cfg->role == ROLE_TLSD)
			unpack_tlsd(&r, cfg);
	}
	if (rd_end(&r) != 0) {
		config_free(cfg);
		return NULL;
	}
	return cfg;
}
