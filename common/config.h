/*
 * The one config loader: YAML (libyaml) into typed structures, with every
 * error of a file reported as "file:line:column: message".  The parent
 * loads; children receive only their part, packed with config_pack() and
 * sent as a memfd.
 */
#ifndef IMAPGW_CONFIG_H
#define IMAPGW_CONFIG_H

#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>

#include "buf.h"
#include "imapgw.h"

struct cfg_pos {
	int line, col; /* 1-based; 0 for built-in values */
};

struct cfg_addr {
	struct sockaddr_storage ss;
	socklen_t len;
	char text[80]; /* "127.0.0.1:143" or "[::1]:143" */
};

enum { LISTEN_TLS_NONE = 0, LISTEN_TLS_IMPLICIT };

struct cfg_listen {
	struct cfg_addr addr;
	int tls;
	struct cfg_pos pos;
};

struct cfg_cidr {
	int family; /* AF_INET, AF_INET6, or AF_UNSPEC for "any" */
	uint8_t addr[16];
	int prefix;
	char text[64];
};

enum { BALANCE_ROUND_ROBIN = 0, BALANCE_LEAST_CONN };
enum { SRV_TLS_NONE = 0, SRV_TLS_STARTTLS, SRV_TLS_IMPLICIT };
/* servers.<pool>.connect: when the backend is met */
enum { SRV_CONNECT_EAGER = 0, SRV_CONNECT_LAZY };

struct cfg_member {
	char *host; /* as written: "mail.example.org:143" */
	struct cfg_addr addr; /* resolved by the parent at load */
	uint32_t weight;
	struct cfg_pos pos;
};

struct cfg_server {
	char *name;
	int balance;
	int tls; /* SRV_TLS_* */
	char *tls_profile; /* tls_profiles name, default "default" */
	int profileidx; /* index into config.profiles */
	/* The name sent as SNI and checked against the server's
	 * certificate; NULL: the member's host when it is a name, else its
	 * address is checked (IP SAN). */
	char *server_name;
	uint64_t connect_timeout_ms; /* default 10s */
	int send_id; /* upstream ID with x-originating-*, default on */
	/* SRV_CONNECT_*: lazy (default): the client is greeted with the
	 * greeting the server gave before, and the server is met at the
	 * client's first command for it; or eager: at once */
	int connect;
	struct cfg_member *members;
	size_t nmembers;
	struct cfg_pos pos;
};

enum {
	ACT_ALLOW = 0,
	ACT_STRIP,
	ACT_LOCK,
	ACT_DENY,
	ACT_DROP,
	ACT_BLOCK,
	ACT_TAG, /* spamBlocker: subject tag */
	ACT_HEADER /* spamBlocker: category header */
};

struct cfg_general {
	uint64_t max_email_size; /* default 50M */
	int oversize; /* ACT_*, default deny */
	uint64_t max_line_length; /* default 64K */
	uint32_t max_archive_depth; /* archives opened for content type and
	                               file name rules, 0..16; default 3 */
	int consistency; /* CONSIST_*, default strict */
};

/*
 * general.consistency: strict judges every message a client fetches
 * anything message-derived of (the verdict cache makes it look the same
 * everywhere); lazy judges only fetches that carry message bytes.
 */
enum { CONSIST_STRICT = 0, CONSIST_LAZY };

/*
 * Rules: content_types, filenames, headers.  First match wins; a part
 * (or header line) no rule matches gets none_matched.
 *   content_types: match against the declared type ("image/png") and,
 *                  with auto_detect, the type libmagic detects
 *   filenames:     match against the part's file name and archive
 *                  member names
 *   headers:       match against each "Name: value" line, unfolded;
 *                  strip removes that header field
 */
enum { MATCH_PATTERN = 0, MATCH_EXACT, MATCH_REGEX };

struct cfg_rule {
	char *name; /* "name:", default the match text */
	char *match;
	int type; /* MATCH_*, key "type": pattern (default), exact, regex */
	int action; /* ACT_ALLOW, _STRIP, _LOCK, _DENY, _DROP, _BLOCK */
	int alarm; /* raise an alarm (a log line at LOG_ALERT), default 0 */
	int log; /* log each match, default 1 */
	struct cfg_pos pos;
};

struct cfg_rules {
	int auto_detect; /* content_types only; default 1 */
	int archives; /* content_types, filenames: apply to archive
	                 members too; default 1 */
	int none_matched; /* ACT_*, default allow */
	struct cfg_rule *rules;
	size_t nrules;
};

/* APT Blocker: hash reputation of attachments and archive members. */
enum { APT_HIGH = 0, APT_MEDIUM, APT_LOW, APT_NLEVEL };

struct cfg_apt {
	int enabled; /* built-ins: on */
	char *database; /* file, default /etc/imapgw/apt.db */
	int actions[APT_NLEVEL]; /* ACT_*; default strip, strip, allow */
	uint8_t *data; /* the file's bytes, read by the parent at load
	                  (NULL with len 0 if the file does not exist) */
	size_t len;
	int missing; /* the file did not exist: no hashes known */
};

/* spamBlocker. */
enum { SPAM_CONFIRMED = 0, SPAM_BULK, SPAM_SUSPECT, SPAM_NCAT };
enum { SPAM_ENGINE_BUILTIN = 0, SPAM_ENGINE_SPAMD, SPAM_ENGINE_RSPAMD };

struct cfg_spam_cat {
	int action; /* ACT_ALLOW, _TAG, _HEADER, _DENY, _DROP, _BLOCK */
	char *tag; /* ACT_TAG: put before the Subject */
	double score; /* a score >= this is this category (the highest
	                 category whose threshold is reached) */
};

struct cfg_spam_exception {
	char *sender; /* wildcard on the From address, or NULL */
	char *recipient; /* wildcard on To/Cc addresses, or NULL */
	struct cfg_pos pos;
};

struct cfg_spam {
	int enabled; /* built-ins: on */
	int engine; /* SPAM_ENGINE_* */
	char *rules; /* builtin: rules file, NULL = the compiled-in set */
	uint8_t *rules_data; /* its bytes, read by the parent at load */
	size_t rules_len;
	struct cfg_addr address; /* spamd (default 127.0.0.1:783) or rspamd
	                            (default 127.0.0.1:11333) */
	uint64_t timeout_ms; /* spamd, rspamd: default 30s */
	uint64_t max_size; /* larger messages are not checked; default 1M */
	int on_unavailable; /* ACT_ALLOW (default) or ACT_DENY */
	char *header; /* ACT_HEADER's field name, default X-Spam-Category */
	struct cfg_spam_cat cat[SPAM_NCAT]; /* defaults: confirmed 15 tag
	                                       "***SPAM*** ", bulk 10 tag
	                                       "***BULK*** ", suspect 5
	                                       header */
	struct cfg_spam_exception *exceptions;
	size_t nexceptions;
};

/* Bounds of the antivirus limits (ClamAV takes 32-bit sizes). */
#define CFG_AV_MAX_SIZE (4000ULL * 1024 * 1024)
#define CFG_AV_MAX_RECURSION 100
#define CFG_AV_MAX_FILES 1000000
#define CFG_AV_MAX_TIME_MS (24ULL * 60 * 60 * 1000)

struct cfg_antivirus {
	int enabled; /* default on for the built-ins */
	char *database; /* directory, default /var/lib/clamav */
	int on_virus; /* ACT_ALLOW, _STRIP, _LOCK, _DENY, _DROP, _BLOCK */
	int on_error; /* ACT_ALLOW, _LOCK, _DENY, _DROP */
	uint64_t max_scan_size; /* default 100M */
	uint64_t max_file_size; /* default 25M */
	uint32_t max_recursion; /* default 17 */
	uint32_t max_files; /* default 10000 */
	uint64_t max_scan_time_ms; /* default 120s */
};

struct cfg_action {
	char *name;
	/* netd only: a digest of what judges mail under this action (its
	 * packed scand configuration, with rules, the APT and spam rules
	 * files, and the names, sizes and times of the ClamAV database
	 * files), set by the parent when it packs the config.  A clean
	 * verdict remembered under another stamp is judged again. */
	uint64_t judge_stamp;
	char *inherit; /* NULL for built-ins */
	int builtin;
	int used; /* a policy refers to it: scand loads its engines */
	struct cfg_general general;
	struct cfg_rules content_types;
	struct cfg_rules filenames;
	struct cfg_rules headers;
	struct cfg_antivirus antivirus;
	struct cfg_apt apt_blocker;
	struct cfg_spam spamblocker;
	char *deny_message;
	struct cfg_pos pos;
};

enum { DISP_ALLOW = 0, DISP_DENY, DISP_DENY_RESET };

/*
 * TLS (issue: tlsd).  Certificates and keys are read by the parent, sent
 * to tlsd only (packed for ROLE_TLSD), and wiped from the parent once
 * sent; netd gets names and modes, never key material.
 */
enum { TLS_MODE_DISABLED = 0, TLS_MODE_ENABLED, TLS_MODE_REQUIRED };

struct cfg_cert {
	char *name;
	char *cert; /* PEM file: the certificate, then its chain */
	char *key; /* PEM file: its private key */
	char *ocsp; /* DER OCSP response to staple, or NULL */
	/* The files' bytes: read by the parent when it packs the config for
	 * tlsd (and to check them at load), wiped (explicit_bzero) and
	 * freed as soon as they are sent; set in tlsd's unpacked config. */
	uint8_t *cert_pem, *key_pem, *ocsp_der;
	size_t cert_len, key_len, ocsp_len;
	/* The parent's only, for imapgwctl audit: the certificate's
	 * subject (RFC 2253) and SHA-256 fingerprint ("AB:CD:..."). */
	char *subject;
	char *fingerprint;
	struct cfg_pos pos;
};

struct cfg_tls_profile {
	char *name; /* "default" is built in (index 0) */
	int min_version; /* TLS1_VERSION .. TLS1_3_VERSION; default 1.2 */
	char *ciphers; /* TLS 1.2 and below, OpenSSL syntax; NULL: default */
	char *ciphersuites; /* TLS 1.3; NULL: OpenSSL's default */
	int compliant_only; /* only ECDHE with AEAD below TLS 1.3 */
	int verify_peer; /* as a client: verify the server; default 1 */
	char *ca_file; /* PEM bundle; NULL: the system store */
	uint8_t *ca_pem; /* its bytes, for tlsd (chrooted) */
	size_t ca_len;
	int session_cache; /* resumption (cache and tickets); default 1 */
	uint64_t session_timeout_ms; /* default 5m */
	struct cfg_pos pos;
};

struct cfg_policy_tls {
	int mode; /* TLS_MODE_*: STARTTLS offered and required */
	char **certs; /* certificate names: SNI picks, the first is the
			 default; required by mode != disabled and by an
			 implicit listener */
	int *certidx; /* indices into config.certs */
	size_t ncerts;
	char *profile; /* default "default" */
	int profileidx;
	/* The Proxy Authority (client proxy): a certificate entry whose
	 * certificate is a CA; tlsd presents the client a certificate for
	 * the real server's names signed by it.  NULL / -1: none. */
	char *authority;
	int authority_idx;
};

/* policy "to: original-destination": the client proxy.  The server is
 * where the client was going (SO_ORIGINAL_DST of a connection the
 * firewall redirected); the config gives the policy a server pool of its
 * own with this name prefix, no real members, TLS as its listeners. */
#define CFG_ORIGINAL_DST "original-destination"

struct cfg_policy {
	char *name;
	struct cfg_policy_tls tls;
	int original; /* to: original-destination */
	struct cfg_listen *listen;
	size_t nlisten;
	struct cfg_cidr *from;
	size_t nfrom;
	char *to; /* server pool name */
	int server; /* index into config.servers */
	int disposition;
	char *action; /* action name */
	int actionidx; /* index into config.actions */
	uint64_t idle_timeout_ms; /* default 30m */
	struct cfg_pos pos;
};

/*
 * auto_block: the list the block action puts client addresses on.  The
 * parent keeps it (and this part of the config); netd only gets the
 * addresses blocked.
 */
#define CFG_BLOCK_MIN_MS 1000ULL /* 1s */
#define CFG_BLOCK_MAX_MS (30ULL * 24 * 60 * 60 * 1000) /* 30d */
#define CFG_BLOCK_DEFAULT_MS (20ULL * 60 * 1000) /* 20m */

struct cfg_auto_block {
	uint64_t duration_ms; /* whole seconds, default 20m */
	struct cfg_cidr *exceptions; /* never blocked; default none */
	size_t nexceptions;
};

/* verdict_cache.size: the LMDB map size, 0 = memory only. */
#define CFG_VCACHE_MIN (1024ULL * 1024) /* 1M */
#define CFG_VCACHE_MAX (64ULL * 1024 * 1024 * 1024) /* 64G */
#define CFG_VCACHE_DEFAULT (256ULL * 1024 * 1024) /* 256M */

/* Bounds shared by the loader and config_unpack(). */
#define CONFIG_MAX_ITEMS 1024 /* servers, members, actions, policies, ... */
#define CONFIG_MAX_STR 65535 /* bytes in any string value */

struct config {
	char *file; /* path, or "<built-in>"; "<packed>" when unpacked */
	int role; /* ROLE_PARENT when loaded, else the role it was packed for */
	uint32_t generation;
	char *user;
	char *chroot;
	char *state_dir;
	int workers[ROLE_MAX]; /* resolved counts; "auto" = online CPUs */
	int log_target; /* enum log_target */
	int log_format; /* enum log_format */
	int log_level; /* LOG_* */
	char *control_socket;
	struct cfg_server *servers;
	size_t nservers;
	struct cfg_action *actions; /* built-ins first */
	size_t nactions;
	struct cfg_policy *policies;
	size_t npolicies;
	struct cfg_auto_block auto_block; /* the parent's only */
	struct cfg_cert *certs; /* certificates */
	size_t ncerts;
	struct cfg_tls_profile *profiles; /* "default" first */
	size_t nprofiles;
	uint64_t vcache_size; /* verdict_cache.size, default 256M */
	/* The parent's only: "file:line:col: warning: ...\n" lines the
	 * loader found (an expired certificate, a key file others can
	 * read), NULL if none.  The parent logs them. */
	char *warnings;
};

/* TLS files: the largest the parent reads, and the system's CA store
 * (a profile without ca_file, used to verify a server). */
#define CFG_TLS_MAX_FILE (1024 * 1024) /* cert chain, key, OCSP response */
#define CFG_TLS_MAX_CA (16 * 1024 * 1024)
#define CFG_TLS_SYSTEM_CA "/etc/ssl/certs/ca-certificates.crt"
#define CFG_TLS_MAX_SESSION_TIMEOUT_MS (24ULL * 60 * 60 * 1000)
#define CFG_TLS_MAX_NAME 255 /* = TLS_MAX_NAME (tls.h) */

/* Load and validate.  On any error returns NULL and appends one line per
 * error ("file:line:column: message\n") to errs. */
struct config *config_load(const char *path, struct buf *errs);
struct config *config_load_mem(
    const char *name, const char *text, size_t len, struct buf *errs);
void config_free(struct config *);

/* The built-in default configuration (etc/imapgwd.yaml, embedded). */
extern const char config_default_yaml[];
extern const size_t config_default_yaml_len;

/* Pack the part of cfg that role needs; unpack it in the child.  Unpack
 * bounds-checks everything and returns NULL on a malformed blob. */
int config_pack(const struct config *, enum imapgw_role, struct buf *);
struct config *config_unpack(const void *, size_t);

/* Read the files of a certificate (cert, key, ocsp) into dst's byte
 * fields (dst's other fields are not touched); -1 with errno set (dst
 * wiped) if one cannot be read.  config_cert_wipe() wipes (explicit_bzero)
 * and frees the bytes. */
int config_cert_read(const struct cfg_cert *src, struct cfg_cert *dst);
void config_cert_wipe(struct cfg_cert *);
/* A DNS host name (SNI, server_name): letters, digits, '-', '.', at most
 * CFG_TLS_MAX_NAME bytes, not an address. */
int config_host_name_ok(const char *);

int action_from_name(const char *); /* ACT_* or -1 */
const char *action_name(int);

#endif
