/*
 * The IMAP engine: what each complete logical line becomes.  Today it
 * relays lines unchanged and keeps the client's synchronizing literals in
 * step with the server.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "session.h"

/* The first token of a line: the tag of a command or response. */
static size_t
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
	return t;
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

int
imap_line(struct session *s, struct dir *d)
{
	if (d == &s->sv) {
		if (s->wait_cont)
			imap_held_answer(s, d);
		if (s->ending)
			return -1;
		outq_line(&s->to_c.q, &d->la);
	} else
		outq_line(&s->to_s.q, &d->la);
	lineasm_reset(&d->la);
	return 0;
}

/*
 * A client line ends in a synchronizing literal: send what we have and
 * wait for the server's answer before reading the payload.
 */
int
imap_sync_literal(struct session *s, struct dir *d)
{
	if (!d->la.streamed)
		line_tag(&d->la.text, s->heldtag, sizeof(s->heldtag));
	outq_line(&s->to_s.q, &d->la);
	lineasm_reset(&d->la);
	d->la.streamed = 1;
	s->wait_cont = 1;
	return 0;
}

/* Nothing needs a whole literal yet: pass large ones through as they
 * come, so memory does not grow with message size. */
enum lit_mode
imap_literal_mode(struct session *s, struct dir *d, uint64_t n)
{
	return LIT_STREAM;
}

int
imap_paused(struct session *s, struct dir *d)
{
	return d == &s->c && s->wait_cont;
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
