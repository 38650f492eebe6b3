/*
 * Preview: what is waiting on the server, shown before downloading. The
 * protocol parts live with each account run; this file decodes and lays out.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailpull/mimeword.h"
#include "mailpull/util.h"
#include "account_int.h"
#include "vec.h"

struct row {
	char *folder, *date, *from, *subject;
	uint64_t size;
};

struct pv {
	const struct mp_account *a;
	bool json;
	FILE *out;
	struct row *rows;
	size_t n, cap;
};

/* Display form of a raw header value: encoded words decoded, one line. */
static char *
display(const char *raw, size_t max_chars)
{
	char *dec = NULL, *line = NULL;
	size_t len;

	if (!raw)
		return strdup("");
	if (mimeword_decode(raw, strlen(raw), &dec, &len) < 0)
		return strdup("?");
	if (mimeword_oneline(dec, len, max_chars, &line) < 0)
		line = strdup("?");
	free(dec);
	return line;
}

/* A copy of s with control bytes and bidi controls escaped (util_sanitize). */
static char *
sanitized(const char *s)
{
	size_t len = strlen(s), room = 4 * len + 1;
	char *safe = malloc(room);

	if (safe)
		util_sanitize(safe, room, s, len);
	return safe;
}

static void
json_str(FILE *out, const char *s)
{
	fputc('"', out);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(out, "\\%c", *p);
		else if (*p < 0x20)
			fprintf(out, "\\u%04x", *p);
		else
			fputc(*p, out);
	}
	fputc('"', out);
}

static void
row_free(struct row *r)
{
	char *text[] = { r->folder, r->date, r->from, r->subject };

	for (size_t i = 0; i < ARRAY_SIZE(text); i++)
		free(text[i]);
}

static int
collect(void *ud, const struct preview_item *it)
{
	struct pv *pv = ud;
	struct row r = { 0 };

	/*
	 * Folder names come from the server too: controls and bidi controls are
	 * shown escaped, as in the log lines, so the folder can still be told.
	 */
	if (it->folder && !(r.folder = sanitized(it->folder)))
		return -ENOMEM;
	r.date = display(it->date, 0);
	r.from = display(it->from, 0);
	r.subject = display(it->subject, 0);
	r.size = it->size;
	if (!r.date || !r.from || !r.subject) {
		row_free(&r);
		return -ENOMEM;
	}
	if (pv->json) {
		fputs("{\"account\":", pv->out);
		json_str(pv->out, pv->a->name);
		fputs(",\"folder\":", pv->out);
		if (r.folder)
			json_str(pv->out, r.folder);
		else
			fputs("null", pv->out);
		fputs(",\"date\":", pv->out);
		json_str(pv->out, r.date ? r.date : "");
		fputs(",\"from\":", pv->out);
		json_str(pv->out, r.from ? r.from : "");
		fputs(",\"subject\":", pv->out);
		json_str(pv->out, r.subject ? r.subject : "");
		fprintf(pv->out, ",\"size\":%llu}\n", (unsigned long long)r.size);
	}
	if (vec_grow(&pv->rows, pv->n, &pv->cap, sizeof(*pv->rows), 64) < 0) {
		row_free(&r);
		return -ENOMEM;
	}
	pv->rows[pv->n++] = r;
	return 0;
}

/* Display width of UTF-8 text, counting code points (close enough for a list). */
static size_t
width(const char *s)
{
	size_t w = 0;

	for (; *s; s++)
		if (((unsigned char)*s & 0xc0) != 0x80)
			w++;
	return w;
}

static void
pad(FILE *out, const char *s, size_t to)
{
	fputs(s, out);
	for (size_t w = width(s); w < to; w++)
		fputc(' ', out);
}

static void
print_table(struct pv *pv)
{
	size_t wd = 4, wf = 4, wfo = 0;

	for (size_t i = 0; i < pv->n; i++) {
		char *f = pv->rows[i].from;

		if (pv->rows[i].folder && width(pv->rows[i].folder) > wfo)
			wfo = width(pv->rows[i].folder);

		if (width(pv->rows[i].date) > wd)
			wd = width(pv->rows[i].date);
		if (width(f) > 30) {
			char *cut = NULL;

			if (mimeword_oneline(f, strlen(f), 30, &cut) == 0) {
				free(f);
				pv->rows[i].from = f = cut;
			}
		}
		if (width(f) > wf)
			wf = width(f);
	}
	for (size_t i = 0; i < pv->n; i++) {
		const struct row *r = &pv->rows[i];

		char size[32];

		if (r->folder) {
			pad(pv->out, r->folder, wfo);
			fputs("  ", pv->out);
		}
		pad(pv->out, r->date, wd);
		fputs("  ", pv->out);
		pad(pv->out, r->from, wf);
		if (r->size < 1024 * 1024)
			snprintf(size, sizeof(size), "%.1fK", (double)r->size / 1024.0);
		else
			snprintf(size, sizeof(size), "%.1fM", (double)r->size / 1048576.0);
		fprintf(pv->out, "  %7s  %s\n", size, r->subject);
	}
	fprintf(pv->out, "%s: %zu message%s waiting\n", pv->a->name, pv->n, pv->n == 1 ? "" : "s");
}

int
account_preview(const struct mp_config *cfg, const struct mp_account *a, const char *folder,
		bool json, bool wait, FILE *out, struct mp_err *err)
{
	struct pv pv = { .a = a, .json = json, .out = out };
	struct state *st = NULL;
	int ret;

	if (folder && a->protocol != MP_PROTO_IMAP)
		return mp_err_set(err, -EINVAL, MP_EX_USAGE, "POP3 has one mailbox: no folder to name");
	ret = state_open(cfg->state_dir, a->name, wait, &st, err);
	if (ret == 0)
		ret = a->protocol == MP_PROTO_IMAP ?
			account_imap_preview(a, st, folder, collect, &pv, err) :
			account_pop3_preview(a, st, collect, &pv, err);
	state_close(st);
	if (ret == 0 && !json)
		print_table(&pv);
	for (size_t i = 0; i < pv.n; i++)
		row_free(&pv.rows[i]);
	free(pv.rows);
	if (ret < 0 && err->code == 0)
		mp_err_set(err, ret, mp_exit_from_errno(ret), "%s", strerror(-ret));
	return ret;
}
