/* compassd's HTTP front door (libmicrohttpd) over a compass_engine. */
#ifndef COMPASSD_HTTP_H
#define COMPASSD_HTTP_H

#include <compass/compass.h>

typedef struct cpd_http cpd_http;
struct sockaddr;

typedef struct cpd_http_opts {
    const char *host;
    int port;               /* 0 picks a free port; several front doors may share one port */
    long max_body_bytes;
    long max_connections;   /* per front door */
    int log_requests;
    void (*log_line)(const char *json_line); /* one JSON object, no newline */
    int handoff;            /* no listening socket: connections come from cpd_http_hand */
} cpd_http_opts;

/** Starts serving. Returns NULL with msg filled on failure. */
cpd_http *cpd_http_start(compass_engine *e, const cpd_http_opts *o, char *msg, size_t cap);
/** The port actually bound. */
int cpd_http_port(cpd_http *h);
/** Stops accepting new connections; those open keep being served. */
void cpd_http_quiesce(cpd_http *h);
/** Connections open right now. */
long cpd_http_open_connections(cpd_http *h);
/** external mode: libmicrohttpd's epoll descriptor, readable when it has work. */
int cpd_http_fd(cpd_http *h);
/** external mode: does the ready work without blocking, if there is any: ready (its
 *  descriptor said so), a connection resumed since the last run, or a timeout due. Returns 1
 *  if it ran libmicrohttpd. */
int cpd_http_run(cpd_http *h, int ready);
/** 1 when a connection was resumed since the last run (an answer is waiting to be sent). */
int cpd_http_resumed(cpd_http *h);
/** external mode: milliseconds until libmicrohttpd needs to run anyway (-1: never). */
int cpd_http_timeout_ms(cpd_http *h);
/** A listening socket (non-blocking) on host:port for front doors started with handoff; its
 *  port in *bound. -1 with msg filled on failure. */
int cpd_http_listen(const char *host, int port, int *bound, char *msg, size_t cap);
/** TCP connections h serves, plus those handed to it and not yet taken. Any thread. */
long cpd_http_connections(cpd_http *h);
/** Hands accepted client socket fd to h (handoff mode); h's thread takes it in
 *  cpd_http_take_handed. Any thread; fd is h's from now on. */
void cpd_http_hand(cpd_http *h, int fd, const struct sockaddr *addr, unsigned addrlen);
/** h's own thread: starts serving the sockets handed to it. */
void cpd_http_take_handed(cpd_http *h);
/** Stops the daemon and frees everything. */
void cpd_http_stop(cpd_http *h);

#endif
