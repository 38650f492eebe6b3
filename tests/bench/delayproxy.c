/* delayproxy: a TCP relay that adds a round-trip time, for the bench.
 *
 *     delayproxy [-6] LISTEN_PORT TARGET_PORT RTT_MS
 *
 * The kernel here has no sch_netem, so the bench cannot ask tc for a
 * delay. This process listens on 127.0.0.1:LISTEN_PORT (0: any free port;
 * -6: also on ::1, same port, for clients that resolve localhost there),
 * connects every accepted client to 127.0.0.1:TARGET_PORT, and forwards
 * every chunk it reads RTT_MS / 2 later, in each direction, in order. A
 * chunk is read as soon as it arrives and stamped with its due time, so
 * throughput is not reduced; each direction's queue is capped (QUEUE_CAP)
 * and reading stops while it is full, which gives the backpressure of a
 * TCP window of that size. A half close is forwarded as a shutdown after
 * the same delay.
 *
 * It prints "port N" on standard output once listening. On SIGTERM or
 * SIGINT it prints its totals and exits: connections, bytes client to
 * server ("up") and back ("down"), turns (a client chunk read after
 * server bytes went the other way since its last one: about one per round
 * trip the client waited for) and its own CPU time. One process, one
 * thread, epoll; the bench starts one per run.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define QUEUE_CAP (4u << 20)    /* bytes queued per direction before reading stops */
#define CHUNK_MAX (64u << 10)
#define MAX_EVENTS 64

struct chunk {
	struct chunk *next;
	int64_t due_ns;
	size_t len, off;        /* len 0: the source's end of file */
	unsigned char data[];
};

/* One direction of a connection: read from src, written to dst. */
struct dir {
	int src, dst;
	struct chunk *head, *tail;
	size_t queued;
	bool src_eof;           /* read returned 0 (the EOF chunk is queued) */
	bool done;              /* the EOF went through: dst was shut down */
	bool blocked;           /* dst said EAGAIN: wait for EPOLLOUT */
};

struct pair {
	struct pair *next, *prev;
	struct dir up, down;    /* up: client to server */
	int client, server;
	uint32_t ev_client, ev_server;  /* what epoll watches now */
	bool last_down;         /* server bytes went out since the last client chunk */
};

static volatile sig_atomic_t arg_stop;
static int64_t g_delay_ns;
static int g_epfd;
static struct pair *g_pairs;
static unsigned long long g_up, g_down, g_conns, g_turns;

static void on_signal(int sig)
{
	(void)sig;
	arg_stop = 1;
}

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int listen_on(int family, int port)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int one = 1;
	int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;

		a->sin_family = AF_INET;
		a->sin_port = htons((uint16_t)port);
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		len = sizeof(*a);
	} else {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)port);
		a->sin6_addr = in6addr_loopback;
		len = sizeof(*a);
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 128) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static int bound_port(int fd)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);

	if (getsockname(fd, (struct sockaddr *)&a, &len) < 0)
		return -1;
	return ntohs(a.sin_port);
}

static int connect_target(int port)
{
	struct sockaddr_in a;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	/* Blocking connect: on loopback it completes at once. */
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static void set_nonblock_nodelay(int fd)
{
	int one = 1;
	int fl = fcntl(fd, F_GETFL);

	fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	/* Chunks are forwarded as they came: no coalescing of our own. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void watch(struct pair *p, bool is_server, uint32_t want);

static void free_dir(struct dir *d)
{
	while (d->head) {
		struct chunk *c = d->head;

		d->head = c->next;
		free(c);
	}
	d->tail = NULL;
	d->queued = 0;
}

static void close_pair(struct pair *p)
{
	watch(p, false, 0);
	watch(p, true, 0);
	close(p->client);
	close(p->server);
	free_dir(&p->up);
	free_dir(&p->down);
	if (p->prev)
		p->prev->next = p->next;
	else
		g_pairs = p->next;
	if (p->next)
		p->next->prev = p->prev;
	free(p);
}

/* Reads what src has (while the queue has room), stamping each chunk with
 * its due time. Returns -1 when the connection must be closed. */
static int fill(struct pair *p, struct dir *d, bool is_up)
{
	while (!d->src_eof && d->queued < QUEUE_CAP) {
		struct chunk *c = malloc(sizeof(*c) + CHUNK_MAX);
		ssize_t n;

		if (!c)
			return -1;
		n = read(d->src, c->data, CHUNK_MAX);
		if (n < 0) {
			free(c);
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n > 0 && (size_t)n < CHUNK_MAX / 2) {
			struct chunk *s = realloc(c, sizeof(*c) + (size_t)n);

			if (s)
				c = s;
		}
		c->next = NULL;
		c->due_ns = now_ns() + g_delay_ns;
		c->len = (size_t)n;
		c->off = 0;
		if (n == 0)
			d->src_eof = true;
		if (d->tail)
			d->tail->next = c;
		else
			d->head = c;
		d->tail = c;
		d->queued += (size_t)n;
		if (is_up) {
			g_up += (unsigned long long)n;
			if (n > 0 && p->last_down) {
				g_turns++;
				p->last_down = false;
			}
		} else {
			g_down += (unsigned long long)n;
		}
	}
	return 0;
}

/* Writes the chunks that are due. Returns -1 when the connection must be
 * closed. */
static int drain(struct pair *p, struct dir *d, bool is_up, int64_t now)
{
	d->blocked = false;
	while (d->head && d->head->due_ns <= now) {
		struct chunk *c = d->head;

		if (c->len == 0) {
			shutdown(d->dst, SHUT_WR);
			d->done = true;
		} else {
			ssize_t n = write(d->dst, c->data + c->off, c->len - c->off);

			if (n < 0) {
				if (errno == EAGAIN || errno == EWOULDBLOCK) {
					d->blocked = true;
					return 0;
				}
				if (errno == EINTR)
					continue;
				return -1;
			}
			c->off += (size_t)n;
			d->queued -= (size_t)n;
			if (!is_up)
				p->last_down = true;
			if (c->off < c->len)
				continue;
		}
		d->head = c->next;
		if (!d->head)
			d->tail = NULL;
		free(c);
	}
	return 0;
}

/* An fd with nothing to wait for leaves the epoll set: a hung-up socket
 * would otherwise be reported again and again while its data waits out
 * the delay. */
static void watch(struct pair *p, bool is_server, uint32_t want)
{
	uint32_t *cur = is_server ? &p->ev_server : &p->ev_client;
	int fd = is_server ? p->server : p->client;
	struct epoll_event ev = { .events = want };

	if (*cur == want)
		return;
	ev.data.u64 = (uint64_t)(uintptr_t)p | (is_server ? 1u : 0u);
	if (want == 0)
		epoll_ctl(g_epfd, EPOLL_CTL_DEL, fd, NULL);
	else
		epoll_ctl(g_epfd, *cur ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev);
	*cur = want;
}

/* Sets what epoll watches from the pair's state; false when the pair is
 * finished (both ends of file went through). */
static bool rewatch(struct pair *p)
{
	uint32_t c = 0, s = 0;

	if (p->up.done && p->down.done)
		return false;
	if (!p->up.src_eof && p->up.queued < QUEUE_CAP)
		c |= EPOLLIN;
	if (!p->down.src_eof && p->down.queued < QUEUE_CAP)
		s |= EPOLLIN;
	if (p->up.blocked)
		s |= EPOLLOUT;
	if (p->down.blocked)
		c |= EPOLLOUT;
	watch(p, false, c);
	watch(p, true, s);
	return true;
}

static int step(struct pair *p)
{
	int64_t now;

	if (fill(p, &p->up, true) < 0 || fill(p, &p->down, false) < 0)
		return -1;
	now = now_ns();
	if (drain(p, &p->up, true, now) < 0 || drain(p, &p->down, false, now) < 0)
		return -1;
	/* Writing made room: read again (what arrived waits for the next turn
	 * through epoll otherwise, as it would in the kernel's window). */
	return rewatch(p) ? 0 : -1;
}

static void accept_one(int lfd, int target_port)
{
	int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	struct pair *p;
	int s;

	if (c < 0)
		return;
	s = connect_target(target_port);
	if (s < 0) {
		close(c);
		return;
	}
	p = calloc(1, sizeof(*p));
	if (!p) {
		close(c);
		close(s);
		return;
	}
	set_nonblock_nodelay(c);
	set_nonblock_nodelay(s);
	p->client = c;
	p->server = s;
	p->up.src = c;
	p->up.dst = s;
	p->down.src = s;
	p->down.dst = c;
	p->next = g_pairs;
	if (g_pairs)
		g_pairs->prev = p;
	g_pairs = p;
	g_conns++;
	rewatch(p);
}

/* Milliseconds until the first due chunk that is not waiting for EPOLLOUT
 * (-1: none), after writing those already due. */
static int service_timers(void)
{
	int64_t now = now_ns(), first = -1;
	struct pair *p = g_pairs, *next;

	for (; p; p = next) {
		next = p->next;
		if (step(p) < 0) {
			close_pair(p);
			continue;
		}
		for (int k = 0; k < 2; k++) {
			struct dir *d = k ? &p->down : &p->up;

			if (d->head && !d->blocked && (first < 0 || d->head->due_ns < first))
				first = d->head->due_ns;
		}
	}
	if (first < 0)
		return -1;
	now = now_ns();
	return first <= now ? 0 : (int)((first - now + 999999) / 1000000);
}

static void print_totals(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	printf("conns %llu up %llu down %llu turns %llu cpu %.3f\n", g_conns, g_up, g_down,
	       g_turns,
	       (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	int lfd[2] = { -1, -1 }, nl = 0, port, target, rtt;
	bool v6 = false;
	struct sigaction sa = { 0 };
	struct epoll_event evs[MAX_EVENTS];

	if (argc > 1 && strcmp(argv[1], "-6") == 0) {
		v6 = true;
		argv++;
		argc--;
	}
	if (argc != 4) {
		fprintf(stderr, "usage: delayproxy [-6] LISTEN_PORT TARGET_PORT RTT_MS\n");
		return 2;
	}
	port = (int)strtol(argv[1], NULL, 10);
	target = (int)strtol(argv[2], NULL, 10);
	rtt = (int)strtol(argv[3], NULL, 10);
	g_delay_ns = (int64_t)rtt * 1000000 / 2;
	sa.sa_handler = on_signal;      /* no SA_RESTART: epoll_wait returns EINTR */
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	g_epfd = epoll_create1(EPOLL_CLOEXEC);
	lfd[nl] = listen_on(AF_INET, port);
	if (lfd[nl] < 0) {
		perror("delayproxy: listen 127.0.0.1");
		return 1;
	}
	port = bound_port(lfd[nl++]);
	if (v6) {
		lfd[nl] = listen_on(AF_INET6, port);
		if (lfd[nl] >= 0)
			nl++;
	}
	for (int i = 0; i < nl; i++) {
		/* Listening sockets carry data 2 + i: pairs are malloc'ed, aligned. */
		struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 2u + (unsigned)i };

		epoll_ctl(g_epfd, EPOLL_CTL_ADD, lfd[i], &ev);
	}
	printf("port %d\n", port);
	fflush(stdout);
	while (!arg_stop) {
		int timeout = service_timers();
		int n = epoll_wait(g_epfd, evs, MAX_EVENTS, timeout);

		for (int i = 0; i < n; i++) {
			uint64_t u = evs[i].data.u64;

			if (u == 2 || u == 3) {
				accept_one(lfd[u - 2], target);
				continue;
			}
			/* The pair is stepped by service_timers() at the loop's top;
			 * an error or hang-up shows there as a failed read or write. */
		}
	}
	print_totals();
	return 0;
}
