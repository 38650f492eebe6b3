/*
 * Drives the Sent copy (src/sentcopy.c) against a real server for
 * tests/integration/test_sentcopy_dovecot.py, until the send run exercises
 * it through the binary:
 *
 *   sentcopy_drive CONFIG ACCOUNT [-n] STEP...
 *
 * opens the account's Sent mailbox (-n: without creating "Sent"), then
 * runs each step in one session: "has:<MSGID>" prints "has 0|1",
 * "put:<MSGID>:<FILE>" (MSGID may be empty: no lookup) prints
 * "put appended=0|1 uid=N". Prints "folder NAME" after opening. On an
 * error prints "error CODE EX MESSAGE" and exits with the error's class.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mailpull/config.h"
#include "mailpull/err.h"
#include "sentcopy.h"

/* The file's size once every bare LF is CRLF. */
static int
crlf_size(int fd, uint64_t *ret)
{
	char buf[65536];
	uint64_t n = 0;
	char prev = 0;
	ssize_t k;

	while ((k = read(fd, buf, sizeof(buf))) > 0) {
		for (ssize_t i = 0; i < k; i++) {
			if (buf[i] == '\n' && prev != '\r')
				n++;
			prev = buf[i];
		}
		n += (uint64_t)k;
	}
	*ret = n;
	return k < 0 ? -errno : 0;
}

static int
step(struct sentcopy *sc, char *s, struct mp_err *err)
{
	if (strncmp(s, "has:", 4) == 0) {
		bool there = false;
		int r = sentcopy_has(sc, s + 4, &there, err);

		if (r == 0)
			printf("has %d\n", there);
		return r;
	}
	if (strncmp(s, "put:", 4) == 0) {
		char *id = s + 4, *file = strchr(id, ':');
		uint64_t size = 0;
		uint32_t uid = 0;
		bool appended = false;
		int fd, r;

		if (!file)
			return mp_err_set(err, -EINVAL, MP_EX_USAGE, "put:MSGID:FILE");
		*file++ = '\0';
		fd = open(file, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return mp_err_set(err, -errno, MP_EX_IOERR, "%s: %s", file,
					  strerror(errno));
		r = crlf_size(fd, &size);
		if (r == 0)
			r = sentcopy_put(sc, id[0] ? id : NULL, fd, size, &uid, &appended, err);
		close(fd);
		if (r == 0)
			printf("put appended=%d uid=%u\n", appended, uid);
		return r;
	}
	return mp_err_set(err, -EINVAL, MP_EX_USAGE, "unknown step %s", s);
}

int
main(int argc, char **argv)
{
	struct mp_config *cfg = NULL;
	const struct mp_account *a;
	struct sentcopy *sc = NULL;
	struct mp_err err = { 0 };
	bool create = true;
	int i = 3, r;

	if (argc < 3) {
		fprintf(stderr, "usage: sentcopy_drive CONFIG ACCOUNT [-n] STEP...\n");
		return MP_EX_USAGE;
	}
	if (argc > 3 && strcmp(argv[3], "-n") == 0) {
		create = false;
		i++;
	}
	r = config_load(argv[1], &cfg, &err);
	a = r == 0 ? config_find(cfg, argv[2]) : NULL;
	if (r == 0 && !a)
		r = mp_err_set(&err, -ENOENT, MP_EX_USAGE, "no account %s", argv[2]);
	if (r == 0)
		r = sentcopy_open(a, create, &sc, &err);
	if (r == 0)
		printf("folder %s\n", sentcopy_folder(sc));
	for (; r == 0 && i < argc; i++)
		r = step(sc, argv[i], &err);
	sentcopy_close(sc);
	config_free(cfg);
	if (r < 0) {
		printf("error %d %d %s\n", -r, err.ex, err.msg);
		return err.ex ? (int)err.ex : 1;
	}
	return 0;
}
