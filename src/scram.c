/*
 * SCRAM client (RFC 5802 section 3 and 7, RFC 7677, RFC 9266), on raw
 * messages. Every key, the salted password, the proof and the password
 * itself are wiped as soon as they are no longer needed: only the
 * expected server signature lives until the exchange ends.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stringprep.h>

#include "scram.h"
#include "mailpull/util.h"

#define USER_MAX 1024u
#define PASSWORD_MAX 65536u
#define NONCE_GIVEN_MAX 256u
#define NONCE_RANDOM_BYTES 24u  /* 32 base64 characters, no padding */
#define CB_TYPE_MAX 64u
#define CB_DATA_MAX 1024u
#define SALT_MAX (SCRAM_SALT_B64_MAX / 4 * 3)

enum scram_state {
	ST_NEW,          /* nothing sent */
	ST_FIRST_SENT,   /* client-first sent, waiting for server-first */
	ST_FINAL_SENT,   /* client-final sent, waiting for server-final */
	ST_VERIFIED,     /* the server proved it knows the password */
	ST_FAILED,
};

struct scram {
	enum scram_hash hash;
	enum scram_state state;
	bool saslprep;
	char *password;          /* until the proof is made */
	char *gs2_header;        /* "n,,", "y,," or "p=TYPE,," */
	unsigned char *cb_data;  /* appended to the header in c= for "p" */
	size_t cb_len;
	char *first_bare;        /* client-first-message-bare, part of AuthMessage */
	char *nonce;
	unsigned char server_sig[EVP_MAX_MD_SIZE];
	char error[256];
	char srv_error[256];
};

static const EVP_MD *
md_of(enum scram_hash h)
{
	return h == SCRAM_SHA_1 ? EVP_sha1() : EVP_sha256();
}

static size_t
hash_len(enum scram_hash h)
{
	return h == SCRAM_SHA_1 ? 20 : 32;
}

static int MP_PRINTF(3, 4)
fail(struct scram *s, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(s->error, sizeof(s->error), fmt, ap);
	va_end(ap);
	s->state = ST_FAILED;
	return code;
}

static void
free_secret_n(void *p, size_t len)
{
	if (!p)
		return;
	OPENSSL_cleanse(p, len);
	free(p);
}

/* Standard padded base64 (EVP_EncodeBlock writes no line breaks). NULL on ENOMEM. */
static char *
b64_encode(const unsigned char *data, size_t len)
{
	char *out = malloc((len + 2) / 3 * 4 + 1);

	if (out)
		EVP_EncodeBlock((unsigned char *)out, data, (int)len);
	return out;
}

/* RFC 5802 section 7 printable: %x21-2B / %x2D-7E. */
static bool
printable(const char *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] < 0x21 || p[i] > 0x7e || p[i] == ',')
			return false;
	return len > 0;
}

/* RFC 5056 cb-name: 1*(ALPHA / DIGIT / "." / "-"). */
static bool
cb_name_ok(const char *t)
{
	size_t n = t ? strlen(t) : 0;

	if (n == 0 || n > CB_TYPE_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = t[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '-'))
			return false;
	}
	return true;
}

/* Concatenates NUL-terminated parts into one malloc'd string. */
static char *
concat(const char *const *parts, size_t n, size_t *ret_len)
{
	size_t total = 0, o = 0;
	char *out;

	for (size_t i = 0; i < n; i++)
		total += strlen(parts[i]);
	out = malloc(total + 1);
	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(parts[i]);

		memcpy(out + o, parts[i], l);
		o += l;
	}
	out[o] = '\0';
	if (ret_len)
		*ret_len = o;
	return out;
}

static int
random_nonce(char **ret)
{
	unsigned char raw[NONCE_RANDOM_BYTES];

	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return -EIO;
	*ret = b64_encode(raw, sizeof(raw));
	return *ret ? 0 : -ENOMEM;
}

static int
check_params(const struct scram_params *p)
{
	if (!p->user || !p->password || !*p->user || strlen(p->user) > USER_MAX ||
	    strlen(p->password) > PASSWORD_MAX)
		return -EINVAL;
	if (p->nonce &&
	    (strlen(p->nonce) > NONCE_GIVEN_MAX || !printable(p->nonce, strlen(p->nonce))))
		return -EINVAL;
	if (p->gs2 == SCRAM_GS2_P &&
	    (!cb_name_ok(p->cb_type) || !p->cb_data || p->cb_len == 0 || p->cb_len > CB_DATA_MAX))
		return -EINVAL;
	if ((p->hash != SCRAM_SHA_1 && p->hash != SCRAM_SHA_256) ||
	    (p->gs2 != SCRAM_GS2_N && p->gs2 != SCRAM_GS2_Y && p->gs2 != SCRAM_GS2_P))
		return -EINVAL;
	return 0;
}

static int
make_gs2_header(struct scram *s, const struct scram_params *p)
{
	if (p->gs2 == SCRAM_GS2_P) {
		const char *parts[] = { "p=", p->cb_type, ",," };

		s->gs2_header = concat(parts, ARRAY_SIZE(parts), NULL);
		s->cb_data = malloc(p->cb_len);
		if (!s->gs2_header || !s->cb_data)
			return -ENOMEM;
		memcpy(s->cb_data, p->cb_data, p->cb_len);
		s->cb_len = p->cb_len;
		return 0;
	}
	s->gs2_header = strdup(p->gs2 == SCRAM_GS2_Y ? "y,," : "n,,");
	return s->gs2_header ? 0 : -ENOMEM;
}

int
scram_new(const struct scram_params *p, struct scram **ret)
{
	struct scram *s;
	char *name = NULL;
	int r;

	r = check_params(p);
	if (r < 0)
		return r;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->hash = p->hash;
	s->saslprep = p->saslprep;
	s->password = strdup(p->password);
	r = s->password ? make_gs2_header(s, p) : -ENOMEM;
	if (r == 0 && p->nonce) {
		s->nonce = strdup(p->nonce);
		r = s->nonce ? 0 : -ENOMEM;
	} else if (r == 0) {
		r = random_nonce(&s->nonce);
	}
	if (r == 0) {
		name = util_saslname(p->user);
		r = name ? 0 : -ENOMEM;
	}
	if (r == 0) {
		const char *parts[] = { "n=", name, ",r=", s->nonce };

		s->first_bare = concat(parts, ARRAY_SIZE(parts), NULL);
		r = s->first_bare ? 0 : -ENOMEM;
	}
	free(name);
	if (r < 0) {
		scram_free(s);
		return r;
	}
	*ret = s;
	return 0;
}

int
scram_client_first(struct scram *s, char **ret, size_t *ret_len)
{
	const char *parts[] = { s->gs2_header, s->first_bare };
	char *out;

	if (s->state != ST_NEW)
		return fail(s, -EPROTO, "the SCRAM exchange was already started");
	out = concat(parts, ARRAY_SIZE(parts), ret_len);
	if (!out)
		return fail(s, -ENOMEM, "out of memory");
	s->state = ST_FIRST_SENT;
	*ret = out;
	return 0;
}

/* ---- parsing ------------------------------------------------------------- */

/* Comma-separated fields of a message; an empty message is one empty field. */
struct fields {
	const char *pos, *end;
	bool done;
};

static bool
next_field(struct fields *f, const char **ret, size_t *ret_len)
{
	const char *comma;

	if (f->done)
		return false;
	comma = memchr(f->pos, ',', (size_t)(f->end - f->pos));
	*ret = f->pos;
	if (comma) {
		*ret_len = (size_t)(comma - f->pos);
		f->pos = comma + 1;
	} else {
		*ret_len = (size_t)(f->end - f->pos);
		f->done = true;
	}
	return true;
}

/* attr-val (RFC 5802 section 7): ALPHA "=" value. */
static bool
is_attr(const char *f, size_t len, char key)
{
	return len >= 2 && f[0] == key && f[1] == '=';
}

static bool
any_attr(const char *f, size_t len)
{
	return len >= 2 && ((f[0] >= 'a' && f[0] <= 'z') || (f[0] >= 'A' && f[0] <= 'Z')) &&
	       f[1] == '=';
}

static int MP_PRINTF(4, 5)
why_set(char *why, size_t whylen, int code, const char *fmt, ...)
{
	va_list ap;

	if (whylen == 0)
		return code;
	va_start(ap, fmt);
	vsnprintf(why, whylen, fmt, ap);
	va_end(ap);
	return code;
}

/*
 * RFC 5802 section 7 posit-number, at most SCRAM_COUNT_DIGITS digits; a
 * value past ULONG_MAX is ULONG_MAX, out of range all the same.
 */
static int
parse_count(const char *p, size_t len, unsigned long *ret)
{
	unsigned long v = 0;

	if (len == 0 || len > SCRAM_COUNT_DIGITS || p[0] == '0')
		return -EBADMSG;
	for (size_t i = 0; i < len; i++) {
		unsigned long d;

		if (p[i] < '0' || p[i] > '9')
			return -EBADMSG;
		d = (unsigned long)(p[i] - '0');
		v = v > (ULONG_MAX - d) / 10 ? ULONG_MAX : v * 10 + d;
	}
	*ret = v;
	return 0;
}

/* A message may not hold NUL (value-char excludes it) nor pass the cap. */
static int
check_message(const char *msg, size_t len, char *why, size_t whylen)
{
	if (len > SCRAM_MSG_MAX)
		return why_set(why, whylen, -EBADMSG,
			       "the server's SCRAM message is longer than %u bytes", SCRAM_MSG_MAX);
	if (memchr(msg, '\0', len))
		return why_set(why, whylen, -EBADMSG,
			       "the server's SCRAM message holds a NUL byte");
	return 0;
}

/* e=server-error-value: the value, sanitized, in why. */
static int
server_error(const char *f, size_t len, char *why, size_t whylen)
{
	if (whylen > 0)
		util_sanitize(why, whylen, f + 2, len - 2);
	return -EACCES;
}

int
scram_parse_first(const char *msg, size_t len, struct scram_first *ret, char *why, size_t whylen)
{
	struct fields fs = { msg, msg + len, false };
	struct scram_first sf = { 0 };
	const char *f;
	size_t flen;
	int r;

	r = check_message(msg, len, why, whylen);
	if (r < 0)
		return r;
	next_field(&fs, &f, &flen);
	if (is_attr(f, flen, 'e'))
		return server_error(f, flen, why, whylen);
	/* RFC 5802 section 5.1: an m= the client does not know fails the exchange. */
	if (is_attr(f, flen, 'm'))
		return why_set(why, whylen, -EPROTO,
			       "the server requires a SCRAM extension (m=) mailpull does not know");
	if (!is_attr(f, flen, 'r') || !printable(f + 2, flen - 2) || flen - 2 > SCRAM_NONCE_MAX)
		return why_set(why, whylen, -EBADMSG,
			       "the server's SCRAM message has no valid nonce (r=) first");
	sf.nonce = f + 2;
	sf.nonce_len = flen - 2;
	if (!next_field(&fs, &f, &flen) || !is_attr(f, flen, 's') || flen == 2 ||
	    flen - 2 > SCRAM_SALT_B64_MAX)
		return why_set(why, whylen, -EBADMSG,
			       "the server's SCRAM message has no valid salt (s=) after the nonce");
	sf.salt = f + 2;
	sf.salt_len = flen - 2;
	if (!next_field(&fs, &f, &flen) || !is_attr(f, flen, 'i') ||
	    parse_count(f + 2, flen - 2, &sf.iter) < 0)
		return why_set(why, whylen, -EBADMSG,
			       "the server's SCRAM message has no valid iteration count (i=) "
			       "after the salt");
	sf.iter_text = f + 2;
	sf.iter_len = flen - 2;
	/* RFC 5802 section 7: extensions may follow; unknown ones are ignored. */
	while (next_field(&fs, &f, &flen))
		if (!any_attr(f, flen))
			return why_set(why, whylen, -EBADMSG,
				       "the server's SCRAM message has a malformed attribute");
	*ret = sf;
	return 0;
}

/* ---- the proof ----------------------------------------------------------- */

/* Normalize(password): SASLprep (RFC 4013) when asked and possible, else the bytes. */
static char *
normalized_password(const struct scram *s)
{
	char *out = NULL;
	bool ascii = true;

	/*
	 * SASLprep leaves printable ASCII as it is; skipping libidn then also
	 * spares the copies it makes (and frees unwiped) of the password.
	 */
	for (const unsigned char *p = (const unsigned char *)s->password; *p && ascii; p++)
		ascii = *p >= 0x20 && *p <= 0x7e;
	if (ascii || !s->saslprep)
		return strdup(s->password);
	/* RFC 5802 section 2.2: the password is a stored string (no unassigned code points). */
	if (stringprep_profile(s->password, &out, "SASLprep", STRINGPREP_NO_UNASSIGNED) ==
	    STRINGPREP_OK)
		return out;
	return strdup(s->password);
}

static int
hmac(enum scram_hash h, const unsigned char *key, size_t klen, const void *data, size_t dlen,
     unsigned char *out)
{
	unsigned int olen = 0;

	if (!HMAC(md_of(h), key, (int)klen, data, dlen, out, &olen) || olen != hash_len(h))
		return -ENOMEM;
	return 0;
}

struct keys {
	unsigned char salted[EVP_MAX_MD_SIZE];
	unsigned char client_key[EVP_MAX_MD_SIZE];
	unsigned char stored_key[EVP_MAX_MD_SIZE];
	unsigned char client_sig[EVP_MAX_MD_SIZE];
	unsigned char server_key[EVP_MAX_MD_SIZE];
	unsigned char proof[EVP_MAX_MD_SIZE];
};

/*
 * RFC 5802 section 3: SaltedPassword, ClientKey, StoredKey and ServerKey
 * from the password; ClientSignature, ClientProof and ServerSignature from
 * AuthMessage. The server signature is kept in s, the rest in k.
 */
static int
compute(struct scram *s, const unsigned char *salt, size_t salt_len, unsigned long iter,
	const char *auth_msg, size_t auth_len, struct keys *k)
{
	enum scram_hash h = s->hash;
	size_t hl = hash_len(h);
	unsigned int dl = 0;
	char *pw = normalized_password(s);
	int ok;

	if (!pw)
		return -ENOMEM;
	ok = PKCS5_PBKDF2_HMAC(pw, (int)strlen(pw), salt, (int)salt_len, (int)iter, md_of(h),
			       (int)hl, k->salted);
	util_free_secret(pw);
	if (ok != 1)
		return -ENOMEM;
	if (hmac(h, k->salted, hl, "Client Key", 10, k->client_key) < 0 ||
	    !EVP_Digest(k->client_key, hl, k->stored_key, &dl, md_of(h), NULL) || dl != hl ||
	    hmac(h, k->stored_key, hl, auth_msg, auth_len, k->client_sig) < 0 ||
	    hmac(h, k->salted, hl, "Server Key", 10, k->server_key) < 0 ||
	    hmac(h, k->server_key, hl, auth_msg, auth_len, s->server_sig) < 0)
		return -ENOMEM;
	for (size_t i = 0; i < hl; i++)
		k->proof[i] = k->client_key[i] ^ k->client_sig[i];
	return 0;
}

/* "c=" base64(gs2-header [cb data]) ",r=" nonce: client-final-message-without-proof. */
static char *
final_without_proof(const struct scram *s, const struct scram_first *sf)
{
	size_t hlen = strlen(s->gs2_header), n = hlen + s->cb_len;
	unsigned char *cbind = malloc(n);
	char *c64 = NULL, *nonce = NULL, *out = NULL;

	if (!cbind)
		return NULL;
	memcpy(cbind, s->gs2_header, hlen);
	if (s->cb_len)
		memcpy(cbind + hlen, s->cb_data, s->cb_len);
	c64 = b64_encode(cbind, n);
	nonce = util_strndup(sf->nonce, sf->nonce_len);
	if (c64 && nonce) {
		const char *parts[] = { "c=", c64, ",r=", nonce };

		out = concat(parts, ARRAY_SIZE(parts), NULL);
	}
	free(cbind);
	free(c64);
	free(nonce);
	return out;
}

static int
check_first(struct scram *s, const char *msg, size_t len, struct scram_first *sf)
{
	size_t ours = strlen(s->nonce);
	char why[sizeof(s->error)] = "";
	int r;

	r = scram_parse_first(msg, len, sf, why, sizeof(why));
	if (r == -EACCES) {
		snprintf(s->srv_error, sizeof(s->srv_error), "%s", why);
		return fail(s, r, "the server refused the SCRAM login: %s", why);
	}
	if (r < 0)
		return fail(s, r, "%s", why);
	/* RFC 5802 section 5.1: the server's nonce starts with ours and adds to it. */
	if (sf->nonce_len <= ours || memcmp(sf->nonce, s->nonce, ours) != 0)
		return fail(s, -EPROTO, "the server's SCRAM nonce does not extend ours");
	if (sf->iter < SCRAM_ITER_MIN || sf->iter > SCRAM_ITER_MAX)
		return fail(s, -ERANGE,
			    "the server asks for a SCRAM iteration count of %.*s; mailpull accepts "
			    "%u to %u", (int)sf->iter_len, sf->iter_text, SCRAM_ITER_MIN,
			    SCRAM_ITER_MAX);
	return 0;
}

/* without_proof ",p=" base64(proof). */
static char *
with_proof(const char *without_proof, const unsigned char *proof, size_t hl, size_t *ret_len)
{
	char *p64 = b64_encode(proof, hl), *out = NULL;

	if (p64) {
		const char *parts[] = { without_proof, ",p=", p64 };

		out = concat(parts, ARRAY_SIZE(parts), ret_len);
		util_free_secret(p64);
	}
	return out;
}

int
scram_server_first(struct scram *s, const char *msg, size_t len, char **ret, size_t *ret_len)
{
	unsigned char salt[SALT_MAX];
	struct scram_first sf;
	struct keys k;
	char *cfwp = NULL, *auth = NULL, *out = NULL;
	size_t salt_len = 0, auth_len = 0;
	int r;

	if (s->state != ST_FIRST_SENT)
		return fail(s, -EPROTO, "a SCRAM server-first message out of place");
	r = check_first(s, msg, len, &sf);
	if (r < 0)
		return r;
	if (util_b64_decode_strict(sf.salt, sf.salt_len, salt, sizeof(salt), &salt_len) < 0 ||
	    salt_len == 0)
		return fail(s, -EBADMSG, "the server's SCRAM salt (s=) is not base64");
	cfwp = final_without_proof(s, &sf);
	if (cfwp) {
		/* AuthMessage: client-first-bare "," server-first "," client-final-without-proof */
		const char *parts[] = { s->first_bare, ",", "", ",", cfwp };
		char *m = util_strndup(msg, len);

		if (m) {
			parts[2] = m;
			auth = concat(parts, ARRAY_SIZE(parts), &auth_len);
			free(m);
		}
	}
	r = auth ? compute(s, salt, salt_len, sf.iter, auth, auth_len, &k) : -ENOMEM;
	if (r == 0)
		out = with_proof(cfwp, k.proof, hash_len(s->hash), ret_len);
	OPENSSL_cleanse(&k, sizeof(k));
	free(cfwp);
	free(auth);
	/* the password is no longer needed: the server signature is all we keep */
	util_free_secret(s->password);
	s->password = NULL;
	if (!out)
		return fail(s, -ENOMEM, "out of memory");
	s->state = ST_FINAL_SENT;
	*ret = out;
	return 0;
}

int
scram_server_final(struct scram *s, const char *msg, size_t len)
{
	struct fields fs = { msg, msg + len, false };
	unsigned char v[EVP_MAX_MD_SIZE];
	size_t vlen = 0, hl = hash_len(s->hash);
	char why[sizeof(s->error)] = "";
	const char *f;
	size_t flen;
	int r;

	if (s->state == ST_VERIFIED)
		return fail(s, -EPROTO, "a SCRAM message after the server's signature");
	if (s->state != ST_FINAL_SENT)
		return fail(s, -EPROTO, "a SCRAM server-final message out of place");
	r = check_message(msg, len, why, sizeof(why));
	if (r < 0)
		return fail(s, r, "%s", why);
	next_field(&fs, &f, &flen);
	if (is_attr(f, flen, 'e')) {
		server_error(f, flen, s->srv_error, sizeof(s->srv_error));
		return fail(s, -EACCES, "the server refused the SCRAM login: %s", s->srv_error);
	}
	if (!is_attr(f, flen, 'v'))
		return fail(s, -EPROTO, "the server sent no SCRAM signature (v=): it does not know "
			    "the password, or someone is in the middle");
	if (util_b64_decode_strict(f + 2, flen - 2, v, sizeof(v), &vlen) < 0)
		return fail(s, -EBADMSG, "the server's SCRAM signature (v=) is not base64");
	/* RFC 5802 section 9: compare in constant time */
	if (vlen != hl || CRYPTO_memcmp(v, s->server_sig, hl) != 0)
		return fail(s, -EPROTO, "the server's signature is wrong: it does not know the "
			    "password, or someone is in the middle");
	/* later extensions are ignored (RFC 5802 section 7) */
	s->state = ST_VERIFIED;
	OPENSSL_cleanse(s->server_sig, sizeof(s->server_sig));
	return 0;
}

bool
scram_verified(const struct scram *s)
{
	return s->state == ST_VERIFIED;
}

const char *
scram_error(const struct scram *s)
{
	return s->error;
}

const char *
scram_server_error(const struct scram *s)
{
	return s->srv_error;
}

void
scram_free(struct scram *s)
{
	if (!s)
		return;
	util_free_secret(s->password);
	free(s->gs2_header);
	free_secret_n(s->cb_data, s->cb_len);
	free(s->first_bare);
	free(s->nonce);
	OPENSSL_cleanse(s, sizeof(*s));
	free(s);
}
