/*
 * The IMAP engine: what each complete logical line becomes.
 *
 * Every line is parsed (netd/imap_parse.c).  Server responses: the
 * capability lists are filtered through the allow-list in all three
 * places (greeting code, CAPABILITY, tagged OK code); answers to the
 * gateway's own commands are swallowed; a response the parser rejects
 * ends the session, it is never forwarded.  Client commands: pre-auth ID
 * is answered by the gateway; the upstream ID carries the real client
 * address; LOGIN and AUTHENTICATE are followed so the session knows its
 * user; commands for capabilities the gateway removed are refused.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "consist.h"
#include "log.h"
#include "imap_parse.h"
#include "session.h"

#define GW_ID_NAME "imapgw"

static void imap_held_answer(struct session *, struct dir *);
static void line_tag(const struct buf *, char *, size_t);
static int login_refused(struct session *, struct dir *);
static int login_sync(struct session *, struct dir *);
static void forward_nonsync(
    struct session *, struct lineasm *, struct imap_cmd *);

/* The parse results are large; one of each per process, reused. */
static struct imap_cmd scratch_cmd;
static struct imap_resp scratch_resp;

static int
span_eq(const struct lineasm *la, struct imap_span sp, const char *s)
{
	size_t n = strlen(s);

	return sp.len == n &&
	       strncasecmp((const char *)buf_head(&la->text) + sp.off, s, n) ==
	           0;
}

static void
span_copy(
    const struct lineasm *la, struct imap_span sp, char *out, size_t outlen)
{
	size_t n = sp.len < outlen - 1 ? sp.len : outlen - 1;

	memcpy(out, buf_head(&la->text) + sp.off, n);
	out[n] = '\0';
}

/* Printable copy for logs: control bytes become '?'. */
static void
log_safe(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			*s = '?';
}

/* Queue the assembled line with the bytes [off, off + len) replaced. */
static void
emit_replace(struct outq *q, struct lineasm *la, size_t off, size_t len,
    const char *rep, size_t replen)
{
	struct edit ed = {off, len, (char *)rep, replen, -1, 0, 0};

	outq_line_edits(q, NULL, la, &ed, 1);
}

static void say_client(struct session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
say_client(struct session *s, const char *fmt, ...)
{
	char *line;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&line, fmt, ap);
	va_end(ap);
	if (n < 0)
		fatal("vasprintf");
	outq_bytes(&s->to_c.q, line, (size_t)n);
	free(line);
}

/* The client may still turn TLS on with STARTTLS. */
static int
pretls(const struct session *s)
{
	/* RFC 3501 6.2.1: STARTTLS only before authentication. */
	return s->pol->tls.mode != TLS_MODE_DISABLED && !s->ctls && !s->authed;
}

/* Capabilities */

static void
caps_note_server(struct session *s, struct lineasm *la, struct imap_resp *r)
{
	unsigned i;

	for (i = 0; i < r->ncap; i++) {
		if (span_eq(la, r->cap[i], "LITERAL+"))
			s->srv_literalplus = 1;
		else if (span_eq(la, r->cap[i], "ID"))
			s->srv_id = 1;
	}
}

/* Replace the capability atoms of a response by the filtered list. */
static int
caps_rewrite(struct session *s, struct lineasm *la, struct imap_resp *r)
{
	struct imap_capf pol;
	char *out;
	size_t outlen = r->caps.len + 64;
	ssize_t n;

	caps_note_server(s, la, r);
	memset(&pol, 0, sizeof(pol));
	/* The server's STARTTLS is about the link to the server: it never
	 * passes.  The gateway offers its own when the policy says so,
	 * before TLS; with TLS required, only the pre-TLS set and
	 * LOGINDISABLED. */
	pol.flags = IMAP_CAPF_ADD_APPENDLIMIT;
	if (pretls(s) && s->pol->tls.mode == TLS_MODE_REQUIRED)
		pol.flags |= IMAP_CAPF_PRETLS;
	pol.max_size = s->act->general.max_email_size;
	outlen += 64;
	if ((out = malloc(outlen)) == NULL)
		fatal("malloc");
	n = imap_capability_filter(
	    (const char *)buf_head(&la->text) + r->caps.off, r->caps.len, out,
	    outlen, &pol);
	if (n < 0) {
		free(out);
		return -1;
	}
	if (pretls(s)) {
		n += snprintf(out + n, outlen - (size_t)n, " STARTTLS");
		if (s->pol->tls.mode == TLS_MODE_REQUIRED &&
		    strstr(out, "LOGINDISABLED") == NULL)
			n += snprintf(
			    out + n, outlen - (size_t)n, " LOGINDISABLED");
	}
	emit_replace(&s->to_c.q, la, r->caps.off, r->caps.len, out, (size_t)n);
	free(out);
	return 0;
}

/*
 * A [REFERRAL imap://...] code (RFC 2221) sends the client to another
 * server, around the gateway: the code goes, the response stays.
 */
static int
code_strip(struct session *s, struct lineasm *la, struct imap_resp *r,
    const char *what)
{
	size_t len = r->code.span.len;

	if (r->code.span.off + len < buf_used(&la->text) &&
	    buf_head(&la->text)[r->code.span.off + len] == ' ')
		len++;
	log_event(LOG_NOTICE, what, "client", s->client, "user", s->user, NULL);
	emit_replace(&s->to_c.q, la, r->code.span.off, len, "", 0);
	return 0;
}

/* The gateway's own commands upstream, and their answers. */

static void own_command(struct session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
own_command(struct session *s, const char *fmt, ...)
{
	char *args;
	va_list ap;
	int n;

	snprintf(s->own_tag, sizeof(s->own_tag), "igw%llu.%u",
	    (unsigned long long)s->id, ++s->own_seq);
	va_start(ap, fmt);
	n = vasprintf(&args, fmt, ap);
	va_end(ap);
	if (n < 0)
		fatal("vasprintf");
	outq_bytes(&s->to_s.q, s->own_tag, strlen(s->own_tag));
	outq_bytes(&s->to_s.q, " ", 1);
	outq_bytes(&s->to_s.q, args, (size_t)n);
	outq_bytes(&s->to_s.q, "\r\n", 2);
	free(args);
}

/*
 * The real client's address goes upstream in an ID command, so a server
 * that trusts the gateway (Dovecot's login_trusted_networks) logs and
 * judges the real client, not the gateway.
 */
static void
send_originating_id(struct session *s)
{
	if (!s->srv->send_id || !s->srv_id)
		return;
	own_command(s,
	    "ID (\"x-originating-ip\" \"%s\" "
	    "\"x-originating-port\" \"%s\")",
	    s->client_ip, s->client_port);
}

static int
own_answer(struct session *s, struct lineasm *la, struct imap_resp *r)
{
	if (s->own_tag[0] == '\0')
		return 0;
	if (r->kind == IMAP_RESP_ID)
		return 1; /* our ID's data: the client did not ask */
	if (r->kind != IMAP_RESP_TAGGED)
		return 0;
	if (!lineasm_is(la, r->tag.off, r->tag.len, s->own_tag))
		return 0;
	if (r->status != IMAP_ST_OK)
		log_debug("session %llu: server answered our %s with %.*s",
		    (unsigned long long)s->id, s->own_tag, (int)r->name.len,
		    (const char *)buf_head(&la->text) + r->name.off);
	s->own_tag[0] = '\0';
	return 1;
}

/* Authentication */

static void
auth_done(struct session *s, struct lineasm *la, struct imap_resp *r)
{
	if (!lineasm_is(la, r->tag.off, r->tag.len, s->auth_tag))
		return;
	s->auth_tag[0] = '\0';
	s->sasl_mech[0] = '\0';
	if (r->status != IMAP_ST_OK) {
		log_event(LOG_NOTICE, "login failed", "client", s->client,
		    "user", s->pending_user, NULL);
		return;
	}
	s->authed = 1;
	snprintf(s->user, sizeof(s->user), "%s", s->pending_user);
	log_event(LOG_INFO, "login", "client", s->client, "user", s->user,
	    "policy", s->pol->name, NULL);
}

static void
idle_done(struct session *s, struct lineasm *la, struct imap_resp *r)
{
	if (lineasm_is(la, r->tag.off, r->tag.len, s->idle_tag))
		s->idle_tag[0] = '\0';
}

static int
server_line(struct session *s, struct dir *d)
{
	struct lineasm *la = &d->la;
	struct imap_resp *r = &scratch_resp;
	struct imap_spool sp[LINE_MAX_SPOOLS];
	size_t i;

	for (i = 0; i < la->nspools; i++) {
		sp[i].at = la->spools[i].at;
		sp[i].len = la->spools[i].len;
	}
	if (imap_parse_response(buf_head(&la->text), buf_used(&la->text), sp,
	        la->nspools, r) == -1) {
		snprintf(d->fr.err, sizeof(d->fr.err),
		    "malformed response: %.100s", r->err);
		return -1;
	}
	if (s->lazy == LAZY_CHECK)
		return session_greeting_check(s, la, r);
	if (own_answer(s, la, r) || consist_server(s, la, r) ||
	    msg_server_answer(s, la, r))
		return 0;
	if (!s->greeted) {
		s->greeted = 1;
		session_greeting_learn(s, la, r);
		if (r->kind == IMAP_RESP_COND && r->status == IMAP_ST_PREAUTH &&
		    pretls(s)) {
			/* The client could never turn TLS on. */
			snprintf(s->sv.fr.err, sizeof(s->sv.fr.err),
			    "server greeted PREAUTH before TLS");
			return -1;
		}
		if (r->kind == IMAP_RESP_COND && r->status == IMAP_ST_PREAUTH) {
			s->authed = 1;
			snprintf(s->user, sizeof(s->user), "(preauth)");
		}
		if (r->code.kind == IMAP_CODE_CAPABILITY)
			caps_note_server(s, la, r);
		send_originating_id(s);
	}
	if (r->kind == IMAP_RESP_TAGGED) {
		msg_tagged(s, la, r);
		if (s->auth_tag[0])
			auth_done(s, la, r);
		if (s->idle_tag[0])
			idle_done(s, la, r);
	}
	if (r->kind == IMAP_RESP_CAPABILITY ||
	    r->code.kind == IMAP_CODE_CAPABILITY)
		return caps_rewrite(s, la, r);
	if (r->code.kind == IMAP_CODE_REFERRAL)
		return code_strip(s, la, r, "referral removed");
	/* An [ALERT] before TLS is text an attacker on the wire could have
	 * written: the client shows it as the server's. */
	if (r->code.kind == IMAP_CODE_ALERT && pretls(s))
		return code_strip(s, la, r, "alert before TLS removed");
	if (r->kind == IMAP_RESP_FETCH && msg_fetch(s, la, r))
		return 0;
	outq_line(&s->to_c.q, la);
	return 0;
}

/* Commands */

static int
b64_decode(const uint8_t *in, size_t len, uint8_t *out, size_t outlen)
{
	int n;

	if (len == 0 || len % 4 != 0 || len / 4 * 3 > outlen)
		return -1;
	if ((n = EVP_DecodeBlock(out, in, (int)len)) < 0)
		return -1;
	/* EVP_DecodeBlock counts the padding as data. */
	if (in[len - 1] == '=')
		n--;
	if (in[len - 2] == '=')
		n--;
	return n;
}

/*
 * The user name inside a SASL response: PLAIN (authzid NUL authcid NUL
 * password: the authcid), XOAUTH2 ("user=" ... ^A), LOGIN (its first
 * response is the name).  The password is never kept.
 */
static void
sasl_user(struct session *s, const uint8_t *b64, size_t len)
{
	uint8_t dec[1024];
	char *p, *end;
	int n;

	if ((n = b64_decode(b64, len, dec, sizeof(dec))) <= 0)
		return;
	if (strcasecmp(s->sasl_mech, "PLAIN") == 0) {
		p = memchr(dec, '\0', (size_t)n);
		if (p == NULL ||
		    (end = memchr(p + 1, '\0',
		         (size_t)n - (size_t)(p + 1 - (char *)dec))) == NULL)
			return;
		snprintf(s->pending_user, sizeof(s->pending_user), "%.*s",
		    (int)(end - p - 1), p + 1);
	} else if (strcasecmp(s->sasl_mech, "XOAUTH2") == 0 ||
	           strcasecmp(s->sasl_mech, "OAUTHBEARER") == 0) {
		p = memmem(dec, (size_t)n, "user=", 5);
		if (p == NULL)
			return;
		p += 5;
		end = memchr(p, 1, (size_t)n - (size_t)(p - (char *)dec));
		if (end == NULL)
			return;
		snprintf(s->pending_user, sizeof(s->pending_user), "%.*s",
		    (int)(end - p), p);
	} else if (strcasecmp(s->sasl_mech, "LOGIN") == 0 && s->sasl_step == 0)
		snprintf(s->pending_user, sizeof(s->pending_user), "%.*s", n,
		    (char *)dec);
	memset(dec, 0, sizeof(dec));
	log_safe(s->pending_user);
}

/* A client line inside an AUTHENTICATE exchange is SASL data. */
static int
sasl_line(struct session *s, struct lineasm *la)
{
	size_t n = buf_used(&la->text);
	const uint8_t *p = buf_head(&la->text);

	while (n > 0 && (p[n - 1] == '\n' || p[n - 1] == '\r'))
		n--;
	sasl_user(s, p, n);
	s->sasl_step++;
	outq_line(&s->to_s.q, la);
	return 0;
}

static void
refuse(struct session *s, struct lineasm *la, struct imap_cmd *c,
    const char *code, const char *why)
{
	char tag[64], name[32];

	span_copy(la, c->tag, tag, sizeof(tag));
	span_copy(la, c->name, name, sizeof(name));
	log_safe(tag);
	log_safe(name);
	say_client(s, "%s NO %s%s\r\n", tag, code, why);
	log_event(LOG_NOTICE, "command refused", "client", s->client, "user",
	    s->user, "command", name, "reason", why, NULL);
	s->refused++;
}

/* Pre-auth ID: answered here; it tells the server nothing. */
static void
id_answer(struct session *s, struct lineasm *la, struct imap_cmd *c)
{
	char tag[64], name[64] = "", version[64] = "";
	unsigned i;

	span_copy(la, c->tag, tag, sizeof(tag));
	for (i = 0; i < c->id.npair; i++) {
		if (imap_str_eq(
		        buf_head(&la->text), &c->id.pair[i].key, "name"))
			imap_str_copy(buf_head(&la->text), &c->id.pair[i].val,
			    name, sizeof(name));
		else if (imap_str_eq(buf_head(&la->text), &c->id.pair[i].key,
		             "version"))
			imap_str_copy(buf_head(&la->text), &c->id.pair[i].val,
			    version, sizeof(version));
	}
	log_safe(name);
	log_safe(version);
	log_event(LOG_INFO, "client id", "client", s->client, "name", name,
	    "version", version, NULL);
	say_client(s,
	    "* ID (\"name\" \"%s\" \"version\" \"%s\")\r\n%s OK ID "
	    "completed\r\n",
	    GW_ID_NAME, IMAPGW_VERSION, tag);
}

/*
 * Post-auth ID goes to the server, with any x-originating-* the client
 * put there replaced by the real values.
 */
static void
id_forward(struct session *s, struct lineasm *la, struct imap_cmd *c)
{
	const uint8_t *b = buf_head(&la->text);
	struct buf out;
	unsigned i, kept = 0;

	buf_init(&out, 0);
	buf_printf(&out, "%.*s ID (", (int)c->tag.len, b + c->tag.off);
	for (i = 0; i < c->id.npair; i++) {
		if (imap_str_eq(b, &c->id.pair[i].key, "x-originating-ip") ||
		    imap_str_eq(b, &c->id.pair[i].key, "x-originating-port"))
			continue;
		if (c->id.pair[i].key.spool >= 0 ||
		    c->id.pair[i].val.spool >= 0)
			continue; /* no huge ID values upstream */
		buf_printf(&out, "%s%.*s", kept++ ? " " : "",
		    (int)c->id.pair[i].pair.len, b + c->id.pair[i].pair.off);
	}
	buf_printf(&out,
	    "%s\"x-originating-ip\" \"%s\" "
	    "\"x-originating-port\" \"%s\")\r\n",
	    kept ? " " : "", s->client_ip, s->client_port);
	outq_buf(&s->to_s.q, &out);
	buf_free(&out);
}

static int
client_command(struct session *s, struct dir *d)
{
	struct lineasm *la = &d->la;
	struct imap_cmd *c = &scratch_cmd;
	struct imap_spool sp[LINE_MAX_SPOOLS];
	char tag[64];
	size_t i;

	for (i = 0; i < la->nspools; i++) {
		sp[i].at = la->spools[i].at;
		sp[i].len = la->spools[i].len;
	}
	if (imap_parse_command(buf_head(&la->text), buf_used(&la->text), sp,
	        la->nspools, c) == -1) {
		s->append_line = 0;
		s->take_login = 0;
		/* Not forwarded: the server might read it differently. */
		span_copy(la, c->tag, tag, sizeof(tag));
		log_safe(tag);
		log_event(LOG_NOTICE, "anomaly", "client", s->client, "from",
		    "client", "error", c->err, NULL);
		say_client(s, "%s BAD Command not understood: %s\r\n",
		    tag[0] ? tag : "*", c->err);
		return 0;
	}
	if ((c->kind == IMAP_CMD_LOGIN || c->kind == IMAP_CMD_AUTHENTICATE) &&
	    pretls(s) && s->pol->tls.mode == TLS_MODE_REQUIRED) {
		s->take_login = 0;
		refuse(s, la, c, "[PRIVACYREQUIRED] ",
		    "TLS is required: STARTTLS first");
		return 0;
	}
	switch (c->kind) {
	case IMAP_CMD_ID:
		if (!s->authed)
			id_answer(s, la, c);
		else
			id_forward(s, la, c);
		return 0;
	case IMAP_CMD_STARTTLS:
		if (!pretls(s)) {
			refuse(s, la, c, "",
			    s->ctls     ? "TLS is already active"
			    : s->authed ? "STARTTLS is only allowed before "
			                  "login"
			                : "STARTTLS is not available through "
			                  "this gateway");
			return 0;
		}
		span_copy(la, c->tag, tag, sizeof(tag));
		say_client(s, "%s OK Begin TLS negotiation now\r\n", tag);
		session_starttls(s);
		return 0;
	case IMAP_CMD_COMPRESS:
		refuse(s, la, c, "",
		    "COMPRESS is not available through this "
		    "gateway");
		return 0;
	case IMAP_CMD_URLFETCH:
	case IMAP_CMD_GENURLAUTH:
	case IMAP_CMD_RESETKEY:
		refuse(s, la, c, "",
		    "URLAUTH is not available through this "
		    "gateway");
		return 0;
	case IMAP_CMD_APPEND:
	case IMAP_CMD_REPLACE:
		if (c->catenate) {
			s->append_line = 0;
			refuse(s, la, c, "[CANNOT] ",
			    "CATENATE is not available through this gateway");
			return 0;
		}
		if (msg_append(s, la, c))
			return 0;
		break;
	case IMAP_CMD_LOGIN:
		span_copy(la, c->tag, s->auth_tag, sizeof(s->auth_tag));
		s->pending_user[0] = '\0';
		imap_str_copy(buf_head(&la->text), &c->user, s->pending_user,
		    sizeof(s->pending_user));
		log_safe(s->pending_user);
		if (s->take_login) {
			s->take_login = 0;
			forward_nonsync(s, la, c);
			return 0;
		}
		break;
	case IMAP_CMD_AUTHENTICATE:
		span_copy(la, c->tag, s->auth_tag, sizeof(s->auth_tag));
		span_copy(la, c->mech, s->sasl_mech, sizeof(s->sasl_mech));
		s->pending_user[0] = '\0';
		s->sasl_step = 0;
		if (c->has_ir) {
			sasl_user(
			    s, buf_head(&la->text) + c->ir.off, c->ir.len);
			s->sasl_step = 1;
		}
		break;
	case IMAP_CMD_IDLE:
		span_copy(la, c->tag, s->idle_tag, sizeof(s->idle_tag));
		break;
	case IMAP_CMD_FETCH:
		if (msg_fetch_command(s, la, c))
			return 0;
		break;
	case IMAP_CMD_SELECT:
	case IMAP_CMD_EXAMINE:
	case IMAP_CMD_CLOSE:
	case IMAP_CMD_UNSELECT:
		consist_client(s, la, c);
		break;
	default:
		break;
	}
	outq_line(&s->to_s.q, la);
	return 0;
}

int
imap_line(struct session *s, struct dir *d)
{
	int r;

	if (d == &s->sv) {
		if (s->wait_cont) {
			imap_held_answer(s, d);
			if (s->ending)
				return -1;
		}
		if (d->la.streamed)
			/* The rest of a line whose literal went through. */
			r = (outq_line(&s->to_c.q, &d->la), 0);
		else
			r = server_line(s, d);
		if (r == -1) {
			session_protocol_error(s, d);
			return -1;
		}
		if (s->ending)
			return -1;
		/* A FETCH held for judging starts once nothing of the
		 * client's could answer like our own commands. */
		consist_kick(s);
	} else if (d->la.streamed)
		/* The rest of a line whose beginning already went out. */
		outq_line(&s->to_s.q, &d->la);
	else if (s->sasl_mech[0] && s->auth_tag[0])
		sasl_line(s, &d->la);
	else
		client_command(s, d);
	lineasm_reset(&d->la);
	return 0;
}

/* The first token of a line: the tag of a command or response. */
static void
line_tag(const struct buf *b, char *tag, size_t taglen)
{
	const char *p = (const char *)buf_head(b);
	size_t n = buf_used(b), t = 0;

	while (t < n && p[t] != ' ' && p[t] != '\r' && p[t] != '\n')
		t++;
	if (t >= taglen)
		t = taglen - 1;
	memcpy(tag, p, t);
	tag[t] = '\0';
}

/*
 * The command word of a line ("tag VERB ..."), within the bytes the line
 * holds (the text is not NUL-terminated).  "" if there is none.
 */
void
line_verb(const struct lineasm *la, char *verb, size_t verblen)
{
	const char *p = (const char *)buf_head(&la->text);
	size_t n = buf_used(&la->text), i = 0, v = 0;

	while (i < n && p[i] != ' ' && p[i] != '\r' && p[i] != '\n')
		i++;
	if (i < n && p[i] == ' ')
		for (i++; i < n && v + 1 < verblen &&
		          ((p[i] >= 'A' && p[i] <= 'Z') ||
		              (p[i] >= 'a' && p[i] <= 'z'));
		     i++)
			verb[v++] = p[i];
	verb[v] = '\0';
}

/*
 * The server answered while a client literal is held: "+" lets the
 * payload through; the command's tagged response means the server read
 * the line as complete, so the client's next bytes are a new command, as
 * the server will read them.
 */
static void
imap_held_answer(struct session *s, struct dir *d)
{
	const char *p = (const char *)buf_head(&d->la.text);
	size_t n = buf_used(&d->la.text), t = strlen(s->heldtag);

	if (n > 0 && p[0] == '+') {
		session_cont(s, 1);
		return;
	}
	if (t > 0 && n > t && strncmp(p, s->heldtag, t) == 0 && p[t] == ' ')
		session_cont(s, 0);
}

/*
 * LOGIN with synchronizing literals (user, password): with a server that
 * takes LITERAL+, the gateway answers the continuations itself, so it sees
 * the whole command and the user name; the command goes upstream with
 * "{n+}" literals.  Only small literals: credentials, not payload.
 */
static int
login_sync(struct session *s, struct dir *d)
{
	char verb[16];

	if (!s->srv_literalplus || framer_held_size(&d->fr) > 8192)
		return 0;
	if (!s->take_login) {
		if (d->la.streamed)
			return 0;
		line_verb(&d->la, verb, sizeof(verb));
		if (strcasecmp(verb, "LOGIN") != 0)
			return 0;
		s->take_login = 1;
	}
	outq_bytes(&s->to_c.q, "+ Ready for literal data\r\n", 26);
	session_cont(s, 1);
	return 1;
}

/* LOGIN with a literal before TLS when TLS is required: refused before
 * the client sends the literal (its password). */
static int
login_refused(struct session *s, struct dir *d)
{
	char verb[16], tag[64];

	if (d->la.streamed || !pretls(s) ||
	    s->pol->tls.mode != TLS_MODE_REQUIRED)
		return 0;
	line_verb(&d->la, verb, sizeof(verb));
	if (strcasecmp(verb, "LOGIN") != 0)
		return 0;
	line_tag(&d->la.text, tag, sizeof(tag));
	log_safe(tag);
	say_client(s,
	    "%s NO [PRIVACYREQUIRED] TLS is required: STARTTLS "
	    "first\r\n",
	    tag);
	framer_cont(&d->fr, 0);
	d->lines_seen = d->fr.lines;
	lineasm_reset(&d->la);
	return 1;
}

/* Send a command upstream with its synchronizing literals made
 * non-synchronizing (the gateway already answered them). */
static void
forward_nonsync(struct session *s, struct lineasm *la, struct imap_cmd *c)
{
	const uint8_t *b = buf_head(&la->text);
	struct buf out;
	size_t pos = 0;
	unsigned i;

	buf_init(&out, 0);
	for (i = 0; i < c->nlit && i < IMAP_MAX_LITS; i++) {
		if (c->lit[i].flags & IMAP_LIT_NONSYNC)
			continue;
		buf_add(&out, b + pos, c->lit[i].off - pos);
		buf_printf(&out, "%s{%llu+}\r\n",
		    (c->lit[i].flags & IMAP_LIT_BINARY) ? "~" : "",
		    (unsigned long long)c->lit[i].len);
		pos = c->lit[i].off + c->lit[i].mlen;
	}
	buf_add(&out, b + pos, buf_used(&la->text) - pos);
	outq_buf(&s->to_s.q, &out);
	buf_free(&out);
	buf_reset(&la->text);
}

/*
 * A client line ends in a synchronizing literal: send what we have and
 * wait for the server's answer before reading the payload.  A LOGIN sent
 * this way is still followed, though its user name is not seen.
 */
int
imap_sync_literal(struct session *s, struct dir *d)
{
	char verb[32];

	if (msg_append_sync(s, d))
		return 0;
	if (login_refused(s, d))
		return 0;
	if (login_sync(s, d))
		return 0;
	if (!d->la.streamed) {
		line_tag(&d->la.text, s->heldtag, sizeof(s->heldtag));
		line_verb(&d->la, verb, sizeof(verb));
		if (strcasecmp(verb, "LOGIN") == 0) {
			snprintf(
			    s->auth_tag, sizeof(s->auth_tag), "%s", s->heldtag);
			snprintf(s->pending_user, sizeof(s->pending_user),
			    "(literal)");
		}
	}
	outq_line(&s->to_s.q, &d->la);
	lineasm_reset(&d->la);
	d->la.streamed = 1;
	s->wait_cont = 1;
	return 0;
}

/* Whole messages that are judged are spooled; everything else large
 * passes through as it comes, so memory does not grow with its size. */
enum lit_mode
imap_literal_mode(struct session *s, struct dir *d, uint64_t n)
{
	return msg_literal_mode(s, d, n);
}

/*
 * The client waits while its literal is held, and until the server's
 * greeting was handled, so the upstream ID with the client's address
 * goes before any command of the client.
 */
int
imap_paused(struct session *s, struct dir *d)
{
	if (d == &s->c && (s->wait_cont || !s->greeted))
		return 1;
	/* STARTTLS answered: nothing more is read from either side until
	 * the TLS channel is up (the client's next bytes are TLS). */
	if (s->starttls)
		return 1;
	if (consist_paused(s, d == &s->c))
		return 1;
	return msg_paused(s, d);
}

/* Client lines: note LOGOUT, log the command word (never arguments). */
void
imap_client_line_cb(void *arg, const char *prefix, size_t len, int truncated)
{
	struct session *s = arg;
	char tag[64], cmd[32];

	if (sscanf(prefix, "%63s %31s", tag, cmd) != 2)
		return;
	if (strcasecmp(cmd, "LOGOUT") == 0)
		s->logout = 1;
	if (log_getlevel() >= LOG_DEBUG)
		log_debug("session %llu: client command %s %s",
		    (unsigned long long)s->id, tag, cmd);
}
