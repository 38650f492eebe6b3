/* Service manager notifications through libsystemd's sd_notify(). */
#include <stdio.h>
#include <time.h>

#include <systemd/sd-daemon.h>

#include "mailpull/svc.h"

/* unset_environment = 0: worker processes never notify, but the state is kept for reloads. */
static void
notify(const char *text)
{
	(void)sd_notify(0, text);
}

void
svc_ready(const char *status)
{
	char buf[512];

	if (status) {
		snprintf(buf, sizeof(buf), "READY=1\nSTATUS=%s", status);
		notify(buf);
	} else {
		notify("READY=1");
	}
}

void
svc_status(const char *status)
{
	char buf[512];

	snprintf(buf, sizeof(buf), "STATUS=%s", status);
	notify(buf);
}

void
svc_reloading(void)
{
	struct timespec ts;
	char buf[128];

	clock_gettime(CLOCK_MONOTONIC, &ts);
	snprintf(buf, sizeof(buf), "RELOADING=1\nMONOTONIC_USEC=%llu",
		 (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
	notify(buf);
}

void
svc_stopping(void)
{
	notify("STOPPING=1");
}

int64_t
svc_watchdog_ms(void)
{
	uint64_t usec = 0;

	if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0)
		return 0;
	return (int64_t)(usec / 1000 ? usec / 1000 : 1);
}

void
svc_watchdog(void)
{
	notify("WATCHDOG=1");
}
