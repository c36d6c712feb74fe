/*
** shared_server.h: the interpreter's default NATS server, one per user
** and machine, shared by every `hemera` that has no server configured.
** Used only by interpreter/main.c, on its main thread.
**
** State lives in $HEMERA_STATE_DIR, else $XDG_RUNTIME_DIR/hemera, else
** /tmp/hemera-<uid> (a directory of mode 0700 owned by the user; anything
** else is refused):
**   lock    flock'd exclusively by whoever joins, starts or stops it
**   users   every process using the server holds a shared flock on it for
**           its lifetime; the kernel drops it however the process ends
**   server  "<supervisor pid> <nats-server pid> <url>", written under lock
** The first user starts `hemera server _supervise` (a daemon in its own
** session, so a Ctrl-C in the first user's terminal does not reach it),
** which runs nats-server as its child. The supervisor waits until no
** process holds `users`, stays $HEMERA_SERVER_GRACE ms more (default
** 5000), and stops the server if still nobody uses it.
*/
#ifndef HM_SHARED_SERVER_H
#define HM_SHARED_SERVER_H

/* The URL to use when none is configured: the probe address
** ($HEMERA_PROBE, default 127.0.0.1:4222, "none" to skip) if something
** answers there, else the shared server, joined or started. Says which on
** stderr. Returns a static string, or NULL (and says why on stderr). The
** process stays a user of the shared server until it exits. */
const char *hm_shared_server_url(const char *progname);

/* For tools that use a server but never start one (the CLI's verbs): the
** probe address if something answers there, else the shared server if one
** runs (not joined), else NULL. Says nothing on stderr except about a bad
** $HEMERA_PROBE. Returns a static string. */
const char *hm_shared_server_find(const char *progname);

/* `hemera server status|stop|_supervise`: returns the exit status, or -1
** when argv[0] is not one of these (the caller prints its usage). */
int hm_shared_server_main(const char *progname, int argc, char **argv);

#endif
