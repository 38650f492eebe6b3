/*
 * libFuzzer target for the config loader. The input is written to a file
 * (mode 0600, so a file holding a password gets past the secrecy check
 * and is validated in full) and loaded. Errors are fine; a crash, a leak
 * or an error without a "PATH..." message is not. A file that loads must
 * load the same way twice, and each account must find itself by name and
 * equal itself.
 *
 * Loading never runs password_command nor opens password_file (that is
 * secret.c's job, at fetch time), so no input can make this run a
 * command or read another file. HOME and XDG_STATE_HOME point into the
 * harness's own directory so "~" expands there.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mailpull/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[256];
static char path[300];

static void
cleanup(void)
{
	unlink(path);
	rmdir(dir);
}

static void
setup(void)
{
	const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");

	snprintf(dir, sizeof(dir), "%s/fuzz_config.XXXXXX", base ? base : "/tmp");
	if (!mkdtemp(dir))
		abort();
	snprintf(path, sizeof(path), "%s/config", dir);
	setenv("HOME", dir, 1);
	setenv("XDG_STATE_HOME", dir, 1);
	atexit(cleanup);
}

static void
write_file(const uint8_t *p, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	if (fd < 0)
		abort();
	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n <= 0)
			abort();
		p += n;
		len -= (size_t)n;
	}
	close(fd);
}

static void
check(const struct mp_config *c)
{
	if (!c->path || strcmp(c->path, path) != 0 || !c->state_dir)
		abort();
	if (c->parallel < 1 || c->parallel > 64 || (unsigned)c->log >= MP_LOG_MAX)
		abort();
	for (size_t i = 0; i < c->naccounts; i++) {
		const struct mp_account *a = &c->accounts[i];
		int npw = !!a->password + !!a->password_file + !!a->password_command;

		if (!a->name || !a->host || !a->user || !a->maildir || npw != 1)
			abort();
		if ((unsigned)a->protocol >= MP_PROTO_MAX || (unsigned)a->tls >= MP_TLS_MAX)
			abort();
		if (a->port == 0 || a->port > 65535 || a->interval_s == 0)
			abort();
		if (a->nfolders > 0 && !a->folders)
			abort();
		for (size_t k = 0; k < a->nfolders; k++)
			if (!a->folders[k])
				abort();
		for (size_t k = 0; k < a->nexclude; k++)
			if (!a->exclude[k])
				abort();
		if (config_find(c, a->name) != a || !config_account_equal(a, a))
			abort();
		(void)mp_proto_to_string(a->protocol);
		(void)mp_tls_to_string(a->tls);
	}
	(void)mp_log_to_string(c->log);
	if (config_find(c, "") && c->naccounts == 0)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mp_config *c = NULL, *again = NULL;
	struct mp_err err = { 0 };
	int r;

	if (!dir[0])
		setup();
	write_file(data, size);
	r = config_load(path, &c, &err);
	if (r < 0) {
		if (err.code != r || strncmp(err.msg, path, strlen(path)) != 0) {
			fprintf(stderr, "error %d without a proper message: code %d [%s]\n", r,
				err.code, err.msg);
			abort();
		}
		return 0;
	}
	check(c);
	memset(&err, 0, sizeof(err));
	if (config_load(path, &again, &err) < 0 || again->naccounts != c->naccounts)
		abort();
	for (size_t i = 0; i < c->naccounts; i++)
		if (!config_account_equal(&c->accounts[i], &again->accounts[i]))
			abort();
	config_free(again);
	config_free(c);
	return 0;
}
