/*
 * The TLS load generator of benchmarks/compare.py's TLS rows: trioecho's echo
 * protocol over TLS, in C, so that the client is not what limits the
 * measurement (the Python generator of `trioecho bench --tls` is).  Not part
 * of the package: compare.py builds it at run time (cc -O2 -Wall -Wextra ...
 * -lssl -lcrypto, OpenSSL's headers from libssl-dev) into a cache folder.
 *
 *     tls_loadgen --port PORT [--host 127.0.0.1] [--connections 10]
 *                 [--depth 1] [--size 64] [--framing len|line]
 *                 [--seconds 4] [--warmup 1] [--cafile CA.pem]
 *                 [--server-name localhost] [--cert CERT.pem [--key KEY.pem]]
 *                 [--server-pid PID] [--connect-timeout 10] [--connecting 64]
 *
 * One thread, one level-triggered epoll set, non-blocking sockets and one
 * OpenSSL session per connection: TLS 1.2 or newer, the server's certificate
 * checked against --cafile (else the system's CAs) and --server-name (SNI and
 * the name check; an IP address is checked as one and sent no SNI), a client
 * certificate with --cert/--key.
 *
 * It connects every connection (at most --connecting handshakes at once, each
 * given --connect-timeout seconds to connect, shake hands and deliver the
 * greeting) and checks each greeting; any failure there is one line on stderr
 * and exit status 1.  Then each connection keeps --depth messages of --size
 * bytes in flight; every reply is checked byte for byte (the message + "好",
 * framed), a wrong one is an error and ends its connection.  After --warmup
 * seconds the counters restart (errors excepted: they count from the start)
 * and the measured --seconds begin; with --server-pid, the server's CPU time
 * (utime + stime from /proc/PID/stat) is read when they begin and when they
 * end, as `trioecho bench --server-pid` does.  Then it prints ONE line of
 * JSON on stdout:
 *
 *   sent, received, errors, bytes_sent, bytes_received, seconds (measured
 *   wall time), msgs_per_s, p50_us, p90_us, p99_us, p99_9_us, max_us,
 *   connections, open_connections, depth, size, framing,
 *   server_cpu_seconds (null without --server-pid), last_error
 *
 * and ends every connection cleanly (close_notify, FIN, the rest read until
 * the server's end), for at most 2 seconds.  Exit status: 0; 1 if any reply
 * was wrong, a connection broke or no reply came; 2 for a usage error.
 *
 * OpenSSL's rules for non-blocking sessions: an SSL_read or SSL_write that
 * returns WANT_READ/WANT_WRITE is repeated once the socket is ready, an
 * SSL_write with the same length (its buffer may have moved:
 * SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER); and a record OpenSSL has read holds
 * bytes that no epoll event will announce again, so a connection reads on
 * while SSL_pending()/SSL_has_pending() say so (level-triggered epoll tells
 * of what is still in the socket).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define MAX_EVENTS 512
#define LATENCY_BUCKETS 1000000u /* 1 µs each, up to 1 s; slower replies count in the last */
#define CLOSE_MS 2000u           /* for the connections to end cleanly */
#define MAX_SIZE (1u << 20)      /* payload bytes: trioecho's default largest frame, less room */

static const uint8_t GREETING[] = "\xe4\xbd\xa0\xe5\xa5\xbd\xe6\xac\xa2\xe8\xbf\x8e\xe4\xbd\xa0"; /* 你好欢迎你 */
static const uint8_t SUFFIX[] = "\xe5\xa5\xbd";                                                   /* 好 */
#define GREETING_LEN (sizeof GREETING - 1)
#define SUFFIX_LEN (sizeof SUFFIX - 1)

/* printf's format checks for the message helpers' callers. */
#define PRINTF_LIKE(fmt, args) __attribute__((format(printf, fmt, args)))

enum framing { FRAMING_LEN, FRAMING_LINE };
/* A connection's life; IDLE (calloc's zero) until it starts connecting,
 * GREETED while its greeting is read, CLOSING once the measurement is over. */
enum state { IDLE, CONNECTING, HANDSHAKING, GREETED, RUNNING, CLOSING, CLOSED };

typedef struct {
    const char *host, *cafile, *server_name, *cert, *key;
    long port, connections, depth, size, server_pid, connecting;
    enum framing framing;
    double seconds, warmup, connect_timeout;
} options;

typedef struct {
    int fd, index;
    SSL *ssl;
    enum state state;
    uint32_t events;      /* registered with epoll */
    int blocked_on_write; /* the last SSL call asked for a writable socket */
    int shutdown_sent;
    uint64_t started_ns;  /* when connecting began */
    uint64_t next_seq;    /* the next message to send */
    uint64_t expect_seq;  /* the next reply expected */
    uint64_t *sent_at;    /* when each message in flight was queued, by seq % depth */
    uint8_t *in;
    size_t in_len, in_cap;
    uint8_t *out;
    size_t out_pos, out_len, out_cap;
    size_t retry_len; /* an SSL_write to repeat with this length (0: none) */
} conn;

typedef struct {
    uint64_t sent, received, errors, bytes_sent, bytes_received, max_ns;
    uint32_t *latency; /* LATENCY_BUCKETS counts, by microsecond */
    char last_error[256];
} counters;

static struct {
    options opt;
    SSL_CTX *ctx;
    int epfd, open;
    conn *conns;
    size_t message_len, reply_len, greeting_len;
    uint8_t greeting[4 + GREETING_LEN + 1]; /* framed */
    uint8_t *expected;                       /* scratch: the reply expected next */
    uint8_t *pattern;                        /* --size bytes: every payload's letters */
    int stopping;                            /* the measurement is over: no new messages */
    counters n;
} g;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t after_ns(double seconds)
{
    return now_ns() + (uint64_t)(seconds * 1e9);
}

/* One line on stderr, "tls_loadgen: ", the connection c if any, the message
 * and tail; then exit(status).  Through the three macros below it. */
PRINTF_LIKE(4, 5) _Noreturn static void die(int status, const conn *c, const char *tail,
                                            const char *fmt, ...)
{
    va_list args;
    fputs("tls_loadgen: ", stderr);
    if (c != NULL)
        fprintf(stderr, "connection %d of %ld to %s:%ld: ", c->index + 1, g.opt.connections,
                g.opt.host, g.opt.port);
    va_start(args, fmt);
    vfprintf(stderr, fmt, args);
    va_end(args);
    fprintf(stderr, "%s\n", tail);
    exit(status);
}

/* Options that make no sense: exit status 2. */
#define usage_error(...) die(2, NULL, " (--help for the options)", __VA_ARGS__)
/* A failure while connecting connection c: exit status 1. */
#define setup_failed(c, ...) die(1, (c), "", __VA_ARGS__)
/* Anything else that stops the run before it measures: exit status 1. */
#define fatal(...) die(1, NULL, "", __VA_ARGS__)

/* OpenSSL's reason for its last error ("" if none), the error queue cleared. */
static const char *openssl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    const char *reason = e ? ERR_reason_error_string(e) : NULL;
    buf[0] = '\0';
    if (reason != NULL)
        snprintf(buf, len, "%s", reason);
    else if (e)
        ERR_error_string_n(e, buf, len);
    ERR_clear_error();
    return buf;
}

/* What went wrong with an SSL call on c that returned ret, in words. */
static void describe(char *buf, size_t len, const conn *c, int ret, const char *what)
{
    int saved = errno;
    int err = SSL_get_error(c->ssl, ret);
    char reason[200];
    openssl_reason(reason, sizeof reason);
    if (err == SSL_ERROR_ZERO_RETURN)
        snprintf(buf, len, "%s: the server ended the TLS session (close_notify)", what);
    else if (err == SSL_ERROR_SYSCALL && reason[0] == '\0')
        snprintf(buf, len, "%s: %s", what,
                 saved ? strerror(saved) : "the server closed the connection");
    else
        snprintf(buf, len, "%s: %s", what, reason[0] ? reason : "TLS error");
}

PRINTF_LIKE(1, 2) static void record_error(const char *fmt, ...)
{
    va_list args;
    g.n.errors++;
    va_start(args, fmt);
    vsnprintf(g.n.last_error, sizeof g.n.last_error, fmt, args);
    va_end(args);
}

static void set_events(conn *c, uint32_t events)
{
    struct epoll_event ev;
    if (c->events == events)
        return;
    memset(&ev, 0, sizeof ev);
    ev.events = events;
    ev.data.ptr = c;
    if (epoll_ctl(g.epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0)
        fatal("epoll_ctl: %s", strerror(errno));
    c->events = events;
}

static void close_conn(conn *c)
{
    if (c->ssl != NULL)
        SSL_free(c->ssl);
    c->ssl = NULL;
    if (c->fd >= 0)
        close(c->fd); /* also takes it out of the epoll set */
    c->fd = -1;
    if (c->state == RUNNING || c->state == CLOSING)
        g.open--;
    c->state = CLOSED;
}

/* -- messages --------------------------------------------------------------- */

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static size_t framed_len(size_t payload)
{
    return payload + (g.opt.framing == FRAMING_LEN ? 4 : 1);
}

/* Frame `payload_len` bytes at p (written by fill, or the greeting). */
static uint8_t *frame_start(uint8_t *p, size_t payload_len)
{
    if (g.opt.framing == FRAMING_LEN) {
        put_be32(p, (uint32_t)payload_len);
        p += 4;
    } else {
        p[payload_len] = '\n';
    }
    return p;
}

/* Message `seq` (or, with reply = 1, its reply) framed at p.  The payload
 * is seq's 16 hex digits, lowest first (as many as fit), then g.pattern's
 * letters: never a '\n', never "q"; a copy, not a loop, per byte. */
static void frame_message(uint8_t *p, uint64_t seq, int reply)
{
    static const char hex[] = "0123456789abcdef";
    size_t size = (size_t)g.opt.size, i;
    p = frame_start(p, size + (reply ? SUFFIX_LEN : 0));
    memcpy(p, g.pattern, size);
    for (i = 0; i < size && i < 16; i++)
        p[i] = (uint8_t)hex[(seq >> (4 * i)) & 15];
    if (reply)
        memcpy(p + size, SUFFIX, SUFFIX_LEN);
}

static void queue_message(conn *c, uint64_t t)
{
    if (c->out_len + g.message_len > c->out_cap) {
        /* A write being retried may move: SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER. */
        memmove(c->out, c->out + c->out_pos, c->out_len - c->out_pos);
        c->out_len -= c->out_pos;
        c->out_pos = 0;
    }
    frame_message(c->out + c->out_len, c->next_seq, 0);
    c->out_len += g.message_len;
    c->sent_at[c->next_seq % (uint64_t)g.opt.depth] = t;
    c->next_seq++;
    g.n.sent++;
}

static void record_latency(uint64_t ns)
{
    uint64_t us = ns / 1000u;
    if (ns > g.n.max_ns)
        g.n.max_ns = ns;
    g.n.latency[us < LATENCY_BUCKETS ? us : LATENCY_BUCKETS - 1]++;
}

/* Check the replies that have come in whole; queue a message for each. */
static int take_replies(conn *c)
{
    size_t pos = 0;
    uint64_t t = now_ns();
    while (c->in_len - pos >= g.reply_len) {
        if (c->expect_seq == c->next_seq) {
            record_error("a reply to no message");
            return -1;
        }
        frame_message(g.expected, c->expect_seq, 1);
        if (memcmp(c->in + pos, g.expected, g.reply_len) != 0) {
            record_error("wrong reply to message %llu (length, content or suffix)",
                         (unsigned long long)c->expect_seq);
            return -1;
        }
        record_latency(t - c->sent_at[c->expect_seq % (uint64_t)g.opt.depth]);
        c->expect_seq++;
        g.n.received++;
        pos += g.reply_len;
        if (!g.stopping)
            queue_message(c, t);
    }
    if (pos > 0) {
        memmove(c->in, c->in + pos, c->in_len - pos);
        c->in_len -= pos;
    }
    return 0;
}

/* -- one connection's I/O ----------------------------------------------------- */

/* Send what is queued, until done or the socket is full. */
static int flush(conn *c)
{
    char why[300];
    while (c->out_pos < c->out_len) {
        size_t len = c->retry_len ? c->retry_len : c->out_len - c->out_pos;
        int r = SSL_write(c->ssl, c->out + c->out_pos, (int)(len < INT_MAX ? len : INT_MAX));
        if (r <= 0) {
            int err = SSL_get_error(c->ssl, r);
            if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ) {
                c->retry_len = len; /* OpenSSL wants the same call again */
                c->blocked_on_write |= err == SSL_ERROR_WANT_WRITE;
                return 0;
            }
            describe(why, sizeof why, c, r, "sending");
            record_error("%s", why);
            return -1;
        }
        c->retry_len = 0;
        c->out_pos += (size_t)r;
        g.n.bytes_sent += (uint64_t)r;
    }
    c->out_pos = c->out_len = 0;
    return 0;
}

/* Read and check replies while there is anything to read: until OpenSSL
 * wants more from the socket and holds nothing it has read. */
static int drain(conn *c)
{
    char why[300];
    for (;;) {
        int r = SSL_read(c->ssl, c->in + c->in_len, (int)(c->in_cap - c->in_len));
        if (r <= 0) {
            int err = SSL_get_error(c->ssl, r);
            if (err == SSL_ERROR_WANT_READ)
                return 0;
            if (err == SSL_ERROR_WANT_WRITE) {
                c->blocked_on_write = 1;
                return 0;
            }
            describe(why, sizeof why, c, r, "receiving");
            record_error("%s", why);
            return -1;
        }
        g.n.bytes_received += (uint64_t)r;
        c->in_len += (size_t)r;
        if (take_replies(c) != 0)
            return -1;
        /* The socket's own bytes bring another (level-triggered) event;
         * bytes OpenSSL has already taken from it would not. */
        if (SSL_pending(c->ssl) == 0 && !SSL_has_pending(c->ssl))
            return 0;
    }
}

static int serve(conn *c)
{
    c->blocked_on_write = 0;
    if (drain(c) != 0 || flush(c) != 0)
        return -1;
    set_events(c, EPOLLIN | (c->blocked_on_write ? (uint32_t)EPOLLOUT : 0u));
    return 0;
}

/* -- connecting ---------------------------------------------------------------- */

static void start_connecting(conn *c, const struct addrinfo *address)
{
    struct epoll_event ev;
    int one = 1;
    c->fd = socket(address->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        setup_failed(c, "socket: %s", strerror(errno));
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, address->ai_addr, address->ai_addrlen) != 0 && errno != EINPROGRESS)
        setup_failed(c, "connect: %s", strerror(errno));
    memset(&ev, 0, sizeof ev);
    ev.events = c->events = EPOLLOUT;
    ev.data.ptr = c;
    if (epoll_ctl(g.epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0)
        setup_failed(c, "epoll_ctl: %s", strerror(errno));
    c->started_ns = now_ns();
    c->state = CONNECTING;
}

static void begin_tls(conn *c)
{
    const char *name = g.opt.server_name;
    unsigned char ip[16];
    int is_ip = inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1;
    c->ssl = SSL_new(g.ctx);
    if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1)
        setup_failed(c, "SSL_new: out of memory");
    if (is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), name) != 1
              : (SSL_set_tlsext_host_name(c->ssl, name) != 1 || SSL_set1_host(c->ssl, name) != 1))
        setup_failed(c, "cannot check the server's certificate against --server-name %s", name);
    SSL_set_connect_state(c->ssl);
}

_Noreturn static void handshake_failed(conn *c, int ret)
{
    long verified = SSL_get_verify_result(c->ssl);
    char why[300];
    if (verified != X509_V_OK) {
        ERR_clear_error();
        setup_failed(c, "TLS handshake: the server's certificate was refused: %s "
                        "(--cafile %s, --server-name %s)",
                     X509_verify_cert_error_string(verified),
                     g.opt.cafile ? g.opt.cafile : "not given: the system's CAs",
                     g.opt.server_name);
    }
    describe(why, sizeof why, c, ret, "TLS handshake");
    setup_failed(c, "%s (does the server speak TLS on this port?)", why);
}

/* Read the framed greeting: 1 once it has come whole and right. */
static int read_greeting(conn *c)
{
    char why[300];
    while (c->in_len < g.greeting_len) {
        int r = SSL_read(c->ssl, c->in + c->in_len, (int)(g.greeting_len - c->in_len));
        if (r <= 0) {
            int err = SSL_get_error(c->ssl, r);
            if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
                set_events(c, err == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT);
                return 0;
            }
            describe(why, sizeof why, c, r, "reading the greeting");
            setup_failed(c, "%s", why);
        }
        c->in_len += (size_t)r;
    }
    if (memcmp(c->in, g.greeting, g.greeting_len) != 0)
        setup_failed(c, "the server's greeting is not trioecho's (wrong --framing?)");
    c->in_len = 0;
    c->state = RUNNING;
    set_events(c, 0); /* nothing more comes before our first message (serve() watches it) */
    return 1;
}

/* Take c as far as it can go now: 1 once it is greeted and running. */
static int setup_step(conn *c)
{
    if (c->state == CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
            err = errno;
        if (err != 0)
            setup_failed(c, "connect: %s", strerror(err));
        begin_tls(c);
        c->state = HANDSHAKING;
    }
    if (c->state == HANDSHAKING) {
        int r = SSL_connect(c->ssl);
        if (r != 1) {
            int err = SSL_get_error(c->ssl, r);
            if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE)
                handshake_failed(c, r);
            set_events(c, err == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT);
            return 0;
        }
        c->state = GREETED;
        set_events(c, EPOLLIN);
    }
    return c->state == GREETED ? read_greeting(c) : 0;
}

static void connect_all(const struct addrinfo *address)
{
    struct epoll_event events[MAX_EVENTS];
    uint64_t timeout = (uint64_t)(g.opt.connect_timeout * 1e9);
    uint64_t last_check = now_ns();
    int started = 0, ready = 0, busy = 0, i;
    while (ready < g.opt.connections) {
        uint64_t t;
        int n;
        while (busy < g.opt.connecting && started < g.opt.connections) {
            start_connecting(&g.conns[started++], address);
            busy++;
        }
        n = epoll_wait(g.epfd, events, MAX_EVENTS, 100);
        if (n < 0 && errno != EINTR)
            fatal("epoll_wait: %s", strerror(errno));
        for (i = 0; i < n; i++) {
            conn *c = events[i].data.ptr;
            if (c->state != RUNNING && setup_step(c)) {
                ready++;
                busy--;
            }
        }
        t = now_ns();
        if (t - last_check < 100000000u)
            continue;
        last_check = t;
        for (i = 0; i < started; i++) {
            conn *c = &g.conns[i];
            if (c->state != RUNNING && t - c->started_ns > timeout)
                setup_failed(c, "not connected, through TLS and greeted within %g s "
                                "(--connect-timeout)",
                             g.opt.connect_timeout);
        }
    }
    g.open = g.opt.connections;
}

/* -- running, measuring, closing ---------------------------------------------------- */

/* The events that come by `deadline` (none once it has passed). */
static int wait_until(uint64_t deadline, struct epoll_event *events)
{
    int n;
    do {
        uint64_t t = now_ns();
        if (t >= deadline)
            return 0;
        n = epoll_wait(g.epfd, events, MAX_EVENTS, (int)((deadline - t) / 1000000u) + 1);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        fatal("epoll_wait: %s", strerror(errno));
    return n;
}

static void run_until(uint64_t deadline)
{
    struct epoll_event events[MAX_EVENTS];
    int i;
    while (g.open > 0 && now_ns() < deadline) {
        int n = wait_until(deadline, events);
        for (i = 0; i < n; i++) {
            conn *c = events[i].data.ptr;
            if (c->state == RUNNING && serve(c) != 0)
                close_conn(c);
        }
    }
}

/* One step of ending c cleanly: 1 once it is over. */
static int close_step(conn *c)
{
    uint8_t sink[16384];
    if (c->retry_len) { /* a write OpenSSL holds half done goes out first */
        c->blocked_on_write = 0;
        if (flush(c) != 0)
            return 1;
        if (c->retry_len) {
            set_events(c, EPOLLIN | (c->blocked_on_write ? (uint32_t)EPOLLOUT : 0u));
            return 0;
        }
    }
    if (!c->shutdown_sent) {
        int r = SSL_shutdown(c->ssl);
        if (r < 0) {
            int err = SSL_get_error(c->ssl, r);
            ERR_clear_error();
            if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE)
                return 1;
            set_events(c, err == SSL_ERROR_WANT_WRITE ? EPOLLIN | EPOLLOUT : EPOLLIN);
            return 0;
        }
        c->shutdown_sent = 1;
        shutdown(c->fd, SHUT_WR);
        if (r == 1)
            return 1; /* the server's close_notify had come already */
    }
    set_events(c, EPOLLIN);
    for (;;) { /* read what is still owed to us, up to the server's end */
        int r = SSL_read(c->ssl, sink, sizeof sink);
        int err;
        if (r > 0)
            continue;
        err = SSL_get_error(c->ssl, r);
        if (err == SSL_ERROR_WANT_READ)
            return 0;
        if (err == SSL_ERROR_WANT_WRITE) {
            set_events(c, EPOLLIN | EPOLLOUT);
            return 0;
        }
        ERR_clear_error();
        return 1; /* close_notify, the end of the stream, or an error: over */
    }
}

static void close_all(void)
{
    struct epoll_event events[MAX_EVENTS];
    uint64_t deadline = now_ns() + (uint64_t)CLOSE_MS * 1000000u;
    int i;
    g.stopping = 1;
    for (i = 0; i < g.opt.connections; i++) {
        conn *c = &g.conns[i];
        if (c->state != RUNNING)
            continue;
        c->state = CLOSING;
        if (close_step(c))
            close_conn(c);
    }
    while (g.open > 0 && now_ns() < deadline) {
        int n = wait_until(deadline, events);
        for (i = 0; i < n; i++) {
            conn *c = events[i].data.ptr;
            if (c->state == CLOSING && close_step(c))
                close_conn(c);
        }
    }
    if (g.open > 0)
        fprintf(stderr, "tls_loadgen: %d connections had not ended within %u ms; closed\n",
                g.open, CLOSE_MS);
    for (i = 0; i < g.opt.connections; i++)
        close_conn(&g.conns[i]);
}

/* The server's CPU seconds so far (utime + stime), or -1. */
static double server_cpu_seconds(void)
{
    char path[64], text[4096];
    unsigned long long utime, stime;
    const char *fields;
    size_t len;
    FILE *stat;
    snprintf(path, sizeof path, "/proc/%ld/stat", g.opt.server_pid);
    stat = fopen(path, "r");
    if (stat == NULL)
        return -1;
    len = fread(text, 1, sizeof text - 1, stat);
    fclose(stat);
    text[len] = '\0';
    fields = strrchr(text, ')'); /* after the command's name, which may hold anything */
    /* state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime */
    if (fields == NULL || sscanf(fields + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
                                 &utime, &stime) != 2)
        return -1;
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

static double percentile_us(double q)
{
    uint64_t rank, seen = 0;
    uint32_t i;
    if (g.n.received == 0)
        return 0;
    rank = (uint64_t)(q * (double)g.n.received);
    if (rank >= g.n.received)
        rank = g.n.received - 1;
    for (i = 0; i < LATENCY_BUCKETS - 1; i++) {
        seen += g.n.latency[i];
        if (seen > rank)
            return i;
    }
    return (double)g.n.max_ns / 1000.0; /* in the last bucket: 1 s or more */
}

static void print_json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch < 0x20)
            printf("\\u%04x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

static void print_result(double seconds, double cpu)
{
    printf("{\"sent\": %llu, \"received\": %llu, \"errors\": %llu, \"bytes_sent\": %llu, "
           "\"bytes_received\": %llu, \"seconds\": %.6f, \"msgs_per_s\": %.1f, "
           "\"p50_us\": %.0f, \"p90_us\": %.0f, \"p99_us\": %.0f, \"p99_9_us\": %.0f, "
           "\"max_us\": %.0f, \"connections\": %ld, \"open_connections\": %d, \"depth\": %ld, "
           "\"size\": %ld, \"framing\": \"%s\", \"server_cpu_seconds\": ",
           (unsigned long long)g.n.sent, (unsigned long long)g.n.received,
           (unsigned long long)g.n.errors, (unsigned long long)g.n.bytes_sent,
           (unsigned long long)g.n.bytes_received, seconds,
           seconds > 0 ? (double)g.n.received / seconds : 0.0, percentile_us(0.50),
           percentile_us(0.90), percentile_us(0.99), percentile_us(0.999),
           (double)g.n.max_ns / 1000.0, g.opt.connections, g.open, g.opt.depth, g.opt.size,
           g.opt.framing == FRAMING_LEN ? "len" : "line");
    if (cpu >= 0)
        printf("%.4f", cpu);
    else
        fputs("null", stdout);
    fputs(", \"last_error\": ", stdout);
    print_json_string(g.n.last_error);
    fputs("}\n", stdout);
    fflush(stdout);
}

/* -- setting up ----------------------------------------------------------------------- */

static long parse_long(const char *option, const char *text, long min, long max)
{
    char *end;
    long value;
    errno = 0;
    value = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || value < min || value > max)
        usage_error("--%s takes a whole number from %ld to %ld, not %s", option, min, max, text);
    return value;
}

static double parse_seconds(const char *option, const char *text, double min)
{
    char *end;
    double value;
    errno = 0;
    value = strtod(text, &end);
    if (errno != 0 || end == text || *end != '\0' || !(value >= min && value <= 86400))
        usage_error("--%s takes seconds from %g to 86400, not %s", option, min, text);
    return value;
}

static const char HELP[] =
    "usage: tls_loadgen --port PORT [--host 127.0.0.1] [--connections 10] [--depth 1]\n"
    "                   [--size 64] [--framing len|line] [--seconds 4] [--warmup 1]\n"
    "                   [--cafile CA.pem] [--server-name localhost]\n"
    "                   [--cert CERT.pem [--key KEY.pem]] [--server-pid PID]\n"
    "                   [--connect-timeout 10] [--connecting 64]\n"
    "trioecho's echo protocol over TLS: keeps --depth messages in flight on each\n"
    "connection, checks every reply, prints one line of JSON after the measured seconds.\n";

static void parse_options(int argc, char **argv)
{
    static const struct option longs[] = {
        {"host", required_argument, NULL, 'h'},
        {"port", required_argument, NULL, 'p'},
        {"connections", required_argument, NULL, 'c'},
        {"depth", required_argument, NULL, 'd'},
        {"size", required_argument, NULL, 's'},
        {"framing", required_argument, NULL, 'f'},
        {"seconds", required_argument, NULL, 'S'},
        {"warmup", required_argument, NULL, 'w'},
        {"cafile", required_argument, NULL, 'a'},
        {"server-name", required_argument, NULL, 'n'},
        {"cert", required_argument, NULL, 'C'},
        {"key", required_argument, NULL, 'K'},
        {"server-pid", required_argument, NULL, 'P'},
        {"connect-timeout", required_argument, NULL, 'T'},
        {"connecting", required_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'H'},
        {NULL, 0, NULL, 0},
    };
    options *o = &g.opt;
    int opt;
    o->host = "127.0.0.1";
    o->server_name = "localhost";
    o->connections = 10;
    o->depth = 1;
    o->size = 64;
    o->framing = FRAMING_LEN;
    o->seconds = 4;
    o->warmup = 1;
    o->connect_timeout = 10;
    o->connecting = 64;
    while ((opt = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (opt) {
        case 'h': o->host = optarg; break;
        case 'p': o->port = parse_long("port", optarg, 1, 65535); break;
        case 'c': o->connections = parse_long("connections", optarg, 1, 1000000); break;
        case 'd': o->depth = parse_long("depth", optarg, 1, 1 << 16); break;
        case 's': o->size = parse_long("size", optarg, 1, MAX_SIZE - SUFFIX_LEN - 4); break;
        case 'f':
            if (strcmp(optarg, "len") != 0 && strcmp(optarg, "line") != 0)
                usage_error("--framing is len or line, not %s", optarg);
            o->framing = strcmp(optarg, "len") == 0 ? FRAMING_LEN : FRAMING_LINE;
            break;
        case 'S': o->seconds = parse_seconds("seconds", optarg, 0.001); break;
        case 'w': o->warmup = parse_seconds("warmup", optarg, 0); break;
        case 'a': o->cafile = optarg; break;
        case 'n': o->server_name = optarg; break;
        case 'C': o->cert = optarg; break;
        case 'K': o->key = optarg; break;
        case 'P': o->server_pid = parse_long("server-pid", optarg, 1, LONG_MAX); break;
        case 'T': o->connect_timeout = parse_seconds("connect-timeout", optarg, 0.001); break;
        case 'j': o->connecting = parse_long("connecting", optarg, 1, 100000); break;
        case 'H': fputs(HELP, stdout); exit(0);
        default: usage_error("unknown option");
        }
    }
    if (optind < argc)
        usage_error("unexpected argument %s", argv[optind]);
    if (o->port == 0)
        usage_error("--port is needed");
    if (o->key != NULL && o->cert == NULL)
        usage_error("--key goes with --cert");
}

/* Fail at once, in words, on a file that cannot be read (OpenSSL would
 * say "system lib"). */
static void check_readable(const char *option, const char *path)
{
    FILE *file = path != NULL ? fopen(path, "r") : NULL;
    if (path != NULL && file == NULL)
        fatal("--%s %s: %s", option, path, strerror(errno));
    if (file != NULL)
        fclose(file);
}

static void make_context(void)
{
    char reason[200];
    check_readable("cafile", g.opt.cafile);
    check_readable("cert", g.opt.cert);
    check_readable("key", g.opt.key);
    g.ctx = SSL_CTX_new(TLS_client_method());
    if (g.ctx == NULL)
        fatal("SSL_CTX_new: %s", openssl_reason(reason, sizeof reason));
    SSL_CTX_set_min_proto_version(g.ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(g.ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_verify(g.ctx, SSL_VERIFY_PEER, NULL);
    if (g.opt.cafile != NULL ? SSL_CTX_load_verify_locations(g.ctx, g.opt.cafile, NULL) != 1
                             : SSL_CTX_set_default_verify_paths(g.ctx) != 1)
        fatal("cannot load the CA certificates of %s: %s",
              g.opt.cafile ? g.opt.cafile : "the system", openssl_reason(reason, sizeof reason));
    if (g.opt.cert != NULL) {
        const char *key = g.opt.key ? g.opt.key : g.opt.cert;
        if (SSL_CTX_use_certificate_chain_file(g.ctx, g.opt.cert) != 1)
            fatal("cannot load the client certificate %s: %s", g.opt.cert,
                  openssl_reason(reason, sizeof reason));
        if (SSL_CTX_use_PrivateKey_file(g.ctx, key, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(g.ctx) != 1)
            fatal("cannot load the key of %s from %s: %s", g.opt.cert, key,
                  openssl_reason(reason, sizeof reason));
    }
}

static void allocate(void)
{
    size_t depth = (size_t)g.opt.depth;
    long i;
    g.message_len = framed_len((size_t)g.opt.size);
    g.reply_len = framed_len((size_t)g.opt.size + SUFFIX_LEN);
    g.greeting_len = framed_len(GREETING_LEN);
    memcpy(frame_start(g.greeting, GREETING_LEN), GREETING, GREETING_LEN);
    g.expected = malloc(g.reply_len);
    g.pattern = malloc((size_t)g.opt.size);
    g.n.latency = calloc(LATENCY_BUCKETS, sizeof *g.n.latency);
    g.conns = calloc((size_t)g.opt.connections, sizeof *g.conns);
    if (g.expected == NULL || g.pattern == NULL || g.n.latency == NULL || g.conns == NULL)
        fatal("out of memory");
    for (i = 0; i < g.opt.size; i++)
        g.pattern[i] = (uint8_t)('A' + i % 26);
    for (i = 0; i < g.opt.connections; i++) {
        conn *c = &g.conns[i];
        c->fd = -1;
        c->index = (int)i;
        /* At most `depth` messages are in flight, so these never fill up. */
        c->in_cap = g.reply_len * (depth + 1);
        if (c->in_cap < g.greeting_len)
            c->in_cap = g.greeting_len;
        c->out_cap = g.message_len * (depth + 1);
        c->in = malloc(c->in_cap);
        c->out = malloc(c->out_cap);
        c->sent_at = calloc(depth, sizeof *c->sent_at);
        if (c->in == NULL || c->out == NULL || c->sent_at == NULL)
            fatal("out of memory for %ld connections", g.opt.connections);
    }
}

static struct addrinfo *resolve(void)
{
    struct addrinfo hints, *found = NULL;
    char port[16];
    int rc;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    snprintf(port, sizeof port, "%ld", g.opt.port);
    rc = getaddrinfo(g.opt.host, port, &hints, &found);
    if (rc != 0)
        fatal("cannot resolve %s: %s", g.opt.host, gai_strerror(rc));
    return found;
}

int main(int argc, char **argv)
{
    struct addrinfo *address;
    struct rlimit files;
    uint64_t start, end, t;
    double cpu_start = -1, cpu = -1;
    long i;

    parse_options(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
        files.rlim_cur = files.rlim_max;
        setrlimit(RLIMIT_NOFILE, &files);
    }
    if (g.opt.server_pid && server_cpu_seconds() < 0)
        fatal("--server-pid %ld: cannot read /proc/%ld/stat", g.opt.server_pid,
              g.opt.server_pid);
    make_context();
    allocate();
    g.epfd = epoll_create1(EPOLL_CLOEXEC);
    if (g.epfd < 0)
        fatal("epoll_create1: %s", strerror(errno));
    address = resolve();
    connect_all(address);
    freeaddrinfo(address);

    t = now_ns(); /* every connection greeted: `depth` messages in flight on each */
    for (i = 0; i < g.opt.connections; i++) {
        conn *c = &g.conns[i];
        int k;
        for (k = 0; k < g.opt.depth; k++)
            queue_message(c, t);
        if (serve(c) != 0)
            close_conn(c);
    }
    run_until(after_ns(g.opt.warmup));

    /* The measured seconds: counters from zero (errors excepted). */
    g.n.sent = g.n.received = g.n.bytes_sent = g.n.bytes_received = g.n.max_ns = 0;
    memset(g.n.latency, 0, LATENCY_BUCKETS * sizeof *g.n.latency);
    if (g.opt.server_pid)
        cpu_start = server_cpu_seconds();
    start = now_ns();
    run_until(start + (uint64_t)(g.opt.seconds * 1e9));
    end = now_ns();
    if (g.opt.server_pid && cpu_start >= 0) {
        cpu = server_cpu_seconds();
        cpu = cpu >= 0 ? cpu - cpu_start : -1;
    }
    print_result((double)(end - start) / 1e9, cpu);

    close_all();
    SSL_CTX_free(g.ctx);
    close(g.epfd);
    for (i = 0; i < g.opt.connections; i++) {
        free(g.conns[i].in);
        free(g.conns[i].out);
        free(g.conns[i].sent_at);
    }
    free(g.conns);
    free(g.expected);
    free(g.pattern);
    free(g.n.latency);
    return g.n.errors || g.n.received == 0 ? 1 : 0;
}
