/* trioecho load generator: see loadgen.h. */
#define _GNU_SOURCE
#include "loadgen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static const uint8_t GREETING[] = "\xe4\xbd\xa0\xe5\xa5\xbd\xe6\xac\xa2\xe8\xbf\x8e\xe4\xbd\xa0";
#define GREETING_LEN (sizeof GREETING - 1)
static const uint8_t SUFFIX[] = "\xe5\xa5\xbd";
#define SUFFIX_LEN (sizeof SUFFIX - 1)

typedef struct {
    int fd;
    uint64_t next_seq;   /* next message to send */
    uint64_t expect_seq; /* next reply expected */
    uint64_t *sent_at;   /* send time of each message in flight, by seq % depth */
    uint8_t *in;
    size_t in_len, in_cap;
    uint8_t *out;
    size_t out_len, out_pos, out_cap;
    int want_write;
} tb_conn;

struct tb_bench {
    tb_config cfg;
    int epfd;
    tb_conn *conns;
    size_t message_len; /* one framed message */
    size_t reply_len;   /* one framed reply */
    uint8_t *expected;  /* scratch: the reply expected next */
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The payload of message `seq`: hex digits of seq, never '\n' nor "q". */
static void fill_payload(uint8_t *p, size_t size, uint64_t seq)
{
    static const char hex[] = "0123456789abcdef";
    size_t i;
    for (i = 0; i < size; i++)
        p[i] = (uint8_t)hex[(seq >> (4 * (i % 16))) & 15];
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Write the framed message (or, with reply = 1, its framed reply) for seq. */
static void frame(const tb_bench *b, uint8_t *p, uint64_t seq, int reply)
{
    size_t size = b->cfg.size;
    size_t payload = size + (reply ? SUFFIX_LEN : 0);
    if (b->cfg.framing == TB_FRAMING_LEN) {
        put_be32(p, (uint32_t)payload);
        p += 4;
    }
    fill_payload(p, size, seq);
    if (reply)
        memcpy(p + size, SUFFIX, SUFFIX_LEN);
    if (b->cfg.framing == TB_FRAMING_LINE)
        p[payload] = '\n';
}

static size_t framed_len(const tb_config *c, size_t payload)
{
    return payload + (c->framing == TB_FRAMING_LEN ? 4 : c->framing == TB_FRAMING_LINE ? 1 : 0);
}

static void set_error(tb_stats *s, const char *what, int err)
{
    s->errors++;
    if (err)
        snprintf(s->last_error, sizeof s->last_error, "%s: %s", what, strerror(err));
    else
        snprintf(s->last_error, sizeof s->last_error, "%s", what);
}

static void close_conn(tb_bench *b, tb_conn *c, tb_stats *s)
{
    if (c->fd >= 0) {
        epoll_ctl(b->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
        if (s != NULL && s->open_connections > 0)
            s->open_connections--;
    }
}

static int flush(tb_bench *b, tb_conn *c, tb_stats *s)
{
    while (c->out_pos < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_pos, c->out_len - c->out_pos, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == EINTR)
                continue;
            set_error(s, "send", errno);
            return -1;
        }
        c->out_pos += (size_t)n;
        s->bytes_sent += (uint64_t)n;
    }
    if (c->out_pos == c->out_len)
        c->out_pos = c->out_len = 0;
    int want = c->out_len > 0;
    if (want != c->want_write) {
        struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
        epoll_ctl(b->epfd, EPOLL_CTL_MOD, c->fd, &ev);
        c->want_write = want;
    }
    return 0;
}

static void queue_message(tb_bench *b, tb_conn *c, tb_stats *s, uint64_t t)
{
    if (c->out_len + b->message_len > c->out_cap) {
        memmove(c->out, c->out + c->out_pos, c->out_len - c->out_pos);
        c->out_len -= c->out_pos;
        c->out_pos = 0;
    }
    frame(b, c->out + c->out_len, c->next_seq, 0);
    c->out_len += b->message_len;
    c->sent_at[c->next_seq % (uint64_t)b->cfg.depth] = t;
    c->next_seq++;
    s->sent++;
}

int tb_bucket_index(uint64_t ns)
{
    int bucket;
    if (ns < TB_HIST_SUB) {
        bucket = (int)ns;
    } else {
        int log2 = 63 - __builtin_clzll(ns);
        int sub = (int)((ns >> (log2 - 4)) & (TB_HIST_SUB - 1));
        bucket = (log2 - 3) * TB_HIST_SUB + sub;
    }
    return bucket < TB_HIST_BUCKETS ? bucket : TB_HIST_BUCKETS - 1;
}

static void record_latency(tb_stats *s, uint64_t ns)
{
    if (ns > s->max_latency_ns)
        s->max_latency_ns = ns;
    s->hist[tb_bucket_index(ns)]++;
}

uint64_t tb_bucket_floor(int i)
{
    if (i < TB_HIST_SUB)
        return (uint64_t)i;
    int log2 = i / TB_HIST_SUB + 3;
    if (log2 > 63)
        return UINT64_MAX; /* past any 64-bit latency: never filled */
    uint64_t sub = (uint64_t)(i % TB_HIST_SUB);
    return ((uint64_t)1 << log2) | (sub << (log2 - 4));
}

static int on_readable(tb_bench *b, tb_conn *c, tb_stats *s)
{
    size_t pos = 0;
    uint64_t t;
    ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
    if (n == 0) {
        set_error(s, "connection closed by the server", 0);
        return -1;
    }
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return 0;
        set_error(s, "recv", errno);
        return -1;
    }
    s->bytes_received += (uint64_t)n;
    c->in_len += (size_t)n;
    t = now_ns();
    while (c->in_len - pos >= b->reply_len) {
        if (c->expect_seq == c->next_seq) {
            set_error(s, "a reply to no message", 0);
            return -1;
        }
        frame(b, b->expected, c->expect_seq, 1);
        if (memcmp(c->in + pos, b->expected, b->reply_len) != 0) {
            set_error(s, "wrong reply (length, content or suffix)", 0);
            return -1;
        }
        record_latency(s, t - c->sent_at[c->expect_seq % (uint64_t)b->cfg.depth]);
        c->expect_seq++;
        s->received++;
        pos += b->reply_len;
        queue_message(b, c, s, t);
    }
    if (pos > 0) {
        memmove(c->in, c->in + pos, c->in_len - pos);
        c->in_len -= pos;
    }
    return flush(b, c, s);
}

static int read_greeting(tb_bench *b, int fd, char *err, size_t err_len)
{
    uint8_t want[4 + GREETING_LEN + 1], got[sizeof want];
    size_t n = 0, len = framed_len(&b->cfg, GREETING_LEN);
    uint8_t *p = want;
    if (b->cfg.framing == TB_FRAMING_LEN) {
        put_be32(p, GREETING_LEN);
        p += 4;
    }
    memcpy(p, GREETING, GREETING_LEN);
    if (b->cfg.framing == TB_FRAMING_LINE)
        p[GREETING_LEN] = '\n';
    while (n < len) {
        ssize_t r = recv(fd, got + n, len - n, 0);
        if (r <= 0) {
            snprintf(err, err_len, "reading the greeting: %s",
                     r == 0 ? "connection closed" : strerror(errno));
            return -1;
        }
        n += (size_t)r;
    }
    if (memcmp(got, want, len) != 0) {
        snprintf(err, err_len, "the server's greeting is not trioecho's (wrong --framing?)");
        return -1;
    }
    return 0;
}

static int open_conn(tb_bench *b, tb_conn *c, const struct sockaddr *addr, socklen_t addr_len,
                     char *err, size_t err_len)
{
    struct timeval tv = {.tv_sec = b->cfg.connect_timeout_ms / 1000,
                         .tv_usec = (b->cfg.connect_timeout_ms % 1000) * 1000};
    int one = 1;
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, err_len, "socket: %s", strerror(errno));
        return -1;
    }
    c->fd = fd;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, addr, addr_len) != 0) {
        snprintf(err, err_len, "connect: %s", strerror(errno));
        return -1;
    }
    if (read_greeting(b, fd, err, err_len) != 0)
        return -1;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(b->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        snprintf(err, err_len, "epoll_ctl: %s", strerror(errno));
        return -1;
    }
    return 0;
}

tb_bench *tb_open(const tb_config *config, char *err, size_t err_len)
{
    struct sockaddr_storage addr;
    socklen_t addr_len;
    tb_bench *b;
    tb_stats scratch;
    int i;

    memset(&addr, 0, sizeof addr);
    if (inet_pton(AF_INET, config->host, &((struct sockaddr_in *)&addr)->sin_addr) == 1) {
        ((struct sockaddr_in *)&addr)->sin_family = AF_INET;
        ((struct sockaddr_in *)&addr)->sin_port = htons((uint16_t)config->port);
        addr_len = sizeof(struct sockaddr_in);
    } else if (inet_pton(AF_INET6, config->host, &((struct sockaddr_in6 *)&addr)->sin6_addr) == 1) {
        ((struct sockaddr_in6 *)&addr)->sin6_family = AF_INET6;
        ((struct sockaddr_in6 *)&addr)->sin6_port = htons((uint16_t)config->port);
        addr_len = sizeof(struct sockaddr_in6);
    } else {
        snprintf(err, err_len, "not an IP address: %s", config->host);
        return NULL;
    }
    if (config->connections < 1 || config->depth < 1 || config->size < 1 ||
        config->size > (1u << 24)) {
        snprintf(err, err_len, "connections, depth and size must be positive");
        return NULL;
    }
    b = calloc(1, sizeof *b);
    if (b == NULL) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    b->epfd = -1;
    b->cfg = *config;
    b->cfg.host = NULL; /* not kept */
    b->message_len = framed_len(config, config->size);
    b->reply_len = framed_len(config, config->size + SUFFIX_LEN);
    b->expected = malloc(b->reply_len);
    b->conns = calloc((size_t)config->connections, sizeof *b->conns);
    b->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (b->expected == NULL || b->conns == NULL || b->epfd < 0) {
        snprintf(err, err_len, "out of memory or epoll_create: %s", strerror(errno));
        tb_close(b);
        return NULL;
    }
    for (i = 0; i < config->connections; i++)
        b->conns[i].fd = -1;
    memset(&scratch, 0, sizeof scratch);
    for (i = 0; i < config->connections; i++) {
        tb_conn *c = &b->conns[i];
        /* At most `depth` messages are in flight, so these never fill up. */
        c->in_cap = b->reply_len * ((size_t)config->depth + 1);
        c->out_cap = b->message_len * ((size_t)config->depth + 1);
        c->in = malloc(c->in_cap);
        c->out = malloc(c->out_cap);
        c->sent_at = calloc((size_t)config->depth, sizeof *c->sent_at);
        if (c->in == NULL || c->out == NULL || c->sent_at == NULL) {
            snprintf(err, err_len, "out of memory");
            tb_close(b);
            return NULL;
        }
        if (open_conn(b, c, (struct sockaddr *)&addr, addr_len, err, err_len) != 0) {
            char where[32];
            snprintf(where, sizeof where, " (connection %d)", i + 1);
            strncat(err, where, err_len - strlen(err) - 1);
            tb_close(b);
            return NULL;
        }
    }
    /* Prime every connection with `depth` messages in flight. */
    uint64_t t = now_ns();
    for (i = 0; i < config->connections; i++) {
        tb_conn *c = &b->conns[i];
        int k;
        for (k = 0; k < config->depth; k++)
            queue_message(b, c, &scratch, t);
        if (flush(b, c, &scratch) != 0) {
            snprintf(err, err_len, "%s", scratch.last_error);
            tb_close(b);
            return NULL;
        }
    }
    return b;
}

/* Wait for events until `deadline` (now_ns() time): their count, or -1
 * once the deadline has passed (errno 0) or epoll_wait failed (errno set). */
static int wait_events(tb_bench *b, struct epoll_event *events, int max, uint64_t deadline)
{
    for (;;) {
        uint64_t t = now_ns();
        int n;
        if (t >= deadline) {
            errno = 0;
            return -1;
        }
        n = epoll_wait(b->epfd, events, max, (int)((deadline - t) / 1000000u) + 1);
        if (n >= 0)
            return n;
        if (errno != EINTR)
            return -1;
    }
}

int tb_run(tb_bench *b, int millis, tb_stats *s)
{
    struct epoll_event events[512];
    uint64_t deadline = now_ns() + (uint64_t)millis * 1000000u;
    int open = 0, i;
    for (i = 0; i < b->cfg.connections; i++)
        open += b->conns[i].fd >= 0;
    s->open_connections = open;
    while (open > 0) {
        int n = wait_events(b, events, 512, deadline);
        if (n < 0) {
            if (errno != 0)
                set_error(s, "epoll_wait", errno);
            break;
        }
        for (i = 0; i < n; i++) {
            tb_conn *c = events[i].data.ptr;
            int rc = 0;
            if (c->fd < 0)
                continue;
            if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                rc = on_readable(b, c, s);
            if (rc == 0 && (events[i].events & EPOLLOUT))
                rc = flush(b, c, s);
            if (rc != 0) {
                close_conn(b, c, s);
                open = s->open_connections;
            }
        }
    }
    return s->open_connections;
}

int tb_finish(tb_bench *b, int millis)
{
    struct epoll_event events[512];
    uint8_t sink[16384];
    uint64_t deadline = now_ns() + (uint64_t)millis * 1000000u;
    int open = 0, i;
    for (i = 0; i < b->cfg.connections; i++) {
        tb_conn *c = &b->conns[i];
        struct epoll_event ev;
        if (c->fd < 0)
            continue;
        memset(&ev, 0, sizeof ev);
        ev.events = EPOLLIN | EPOLLRDHUP;
        ev.data.ptr = c;
        if (shutdown(c->fd, SHUT_WR) != 0 || epoll_ctl(b->epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0) {
            close_conn(b, c, NULL);
            continue;
        }
        open++;
    }
    while (open > 0) {
        int n = wait_events(b, events, 512, deadline);
        if (n < 0)
            break;
        for (i = 0; i < n; i++) {
            tb_conn *c = events[i].data.ptr;
            if (c->fd < 0)
                continue;
            for (;;) { /* discard what is still owed to us, up to the server's end */
                ssize_t r = recv(c->fd, sink, sizeof sink, 0);
                if (r > 0)
                    continue;
                if (r < 0 && errno == EINTR)
                    continue;
                if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                    break;
                close_conn(b, c, NULL); /* the end of the stream, or an error */
                open--;
                break;
            }
        }
    }
    return open;
}

void tb_close(tb_bench *b)
{
    int i;
    if (b == NULL)
        return;
    if (b->conns != NULL) {
        for (i = 0; i < b->cfg.connections; i++) {
            tb_conn *c = &b->conns[i];
            if (c->fd >= 0)
                close(c->fd);
            free(c->in);
            free(c->out);
            free(c->sent_at);
        }
        free(b->conns);
    }
    if (b->epfd >= 0)
        close(b->epfd);
    free(b->expected);
    free(b);
}
