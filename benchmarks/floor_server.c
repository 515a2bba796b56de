/*
 * The floor of benchmarks/compare.py: the echo protocol in plain C, one
 * thread, one edge-triggered epoll set.  Not part of the package: compare.py
 * builds it at run time (cc -O2 -Wall -Wextra) into a cache folder.
 *
 *     floor_server --framing {len,line} [--port PORT]
 *
 * prints "listening on 127.0.0.1:PORT" when ready and serves until killed.
 * The protocol is the other peers' (benchmarks/peers.py): on connect the
 * greeting, framed; for every complete message, the message + "好", framed the
 * same way; a message "q" ends the session (what follows it is not read).
 *
 * len:  a 4-byte big-endian length, then that many bytes (at most 1 MiB,
 *       trioecho's default; a longer frame ends the connection);
 * line: bytes up to "\n", the "\n" not part of the message (at most 1 MiB
 *       waiting for its "\n", then the connection ends).
 *
 * The floor does what any epoll server must and no more:
 * - a connection reads until EAGAIN, or until a read comes back shorter than
 *   asked while the peer has not shut down (as trioecho's pump does: the next
 *   input brings the next edge, EPOLLRDHUP tells an end that came first);
 * - the replies to everything one readiness event read go out in one send();
 * - an unfinished message waits in the connection's input buffer, a short
 *   send's remainder in its output buffer until EPOLLOUT (both registered
 *   once, EPOLLET: no epoll_ctl after the accept); while more than OUT_HIGH
 *   bytes wait, the connection stops reading;
 * - an idle connection holds no buffer: only its `conn`.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_FRAME (1u << 20)     /* the longest message, either framing */
#define READ_SIZE (64u << 10)    /* one recv() of a connection with no unfinished message */
#define KEEP_INPUT (64u << 10)   /* an emptied input buffer up to this size is kept */
#define OUT_HIGH (4u << 20)      /* waiting output above which a connection stops reading */
#define BATCH_HIGH (1u << 20)    /* replies gathered before they are sent mid-event */
#define MAX_EVENTS 1024
#define BACKLOG 4096
#define CONN_EVENTS (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)
#define INPUT_ENDS (EPOLLRDHUP | EPOLLHUP | EPOLLERR)

static const char GREETING[] = "\xe4\xbd\xa0\xe5\xa5\xbd\xe6\xac\xa2\xe8\xbf\x8e\xe4\xbd\xa0"; /* 你好欢迎你 */
static const char SUFFIX[] = "\xe5\xa5\xbd";                                                   /* 好 */
#define GREETING_LEN (sizeof GREETING - 1)
#define SUFFIX_LEN (sizeof SUFFIX - 1)

enum framing { FRAMING_LEN, FRAMING_LINE };

typedef struct {
    int fd;
    int ending;       /* q read or input ended: close once the output is out */
    int paused;       /* not reading: more than OUT_HIGH bytes wait to be sent */
    uint8_t *in;      /* an unfinished message (NULL when none and none was kept) */
    size_t in_len, in_cap;
    size_t scanned;   /* line: the first `scanned` bytes of `in` hold no "\n" */
    uint8_t *out;     /* what a short send left, from out_pos to out_len */
    size_t out_pos, out_len, out_cap;
} conn;

static enum framing framing;
static int epoll_fd;
static uint8_t scratch[READ_SIZE];  /* where a connection with no unfinished message reads */
static uint8_t *batch;              /* the replies of one readiness event */
static size_t batch_len, batch_cap;

static void die(const char *what) {
    perror(what);
    exit(1);
}

/* Make room for `more` bytes after `len` in the buffer `*buf` of `*cap`
 * bytes (doubling); exit on no memory, as a benchmark peer may. */
static void reserve(uint8_t **buf, size_t *cap, size_t len, size_t more) {
    if (len + more <= *cap)
        return;
    size_t cap2 = *cap ? *cap : 256;
    while (cap2 < len + more)
        cap2 *= 2;
    uint8_t *grown = realloc(*buf, cap2);
    if (grown == NULL)
        die("realloc");
    *buf = grown;
    *cap = cap2;
}

static void put(const void *data, size_t len) {
    reserve(&batch, &batch_cap, batch_len, len);
    memcpy(batch + batch_len, data, len);
    batch_len += len;
}

/* Append one framed reply (`message` + SUFFIX) to the batch. */
static void put_reply(const uint8_t *message, size_t len) {
    if (framing == FRAMING_LEN) {
        uint32_t n = (uint32_t)(len + SUFFIX_LEN);
        uint8_t header[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
        reserve(&batch, &batch_cap, batch_len, 4 + len + SUFFIX_LEN);
        put(header, 4);
        put(message, len);
        put(SUFFIX, SUFFIX_LEN);
    } else {
        reserve(&batch, &batch_cap, batch_len, len + SUFFIX_LEN + 1);
        put(message, len);
        put(SUFFIX, SUFFIX_LEN);
        put("\n", 1);
    }
}

static int is_quit(const uint8_t *message, size_t len) {
    return len == 1 && message[0] == 'q';
}

/* Answer every complete message of data[0, len) into the batch: the bytes
 * used (all of them after a q, which sets c->ending), or -1 if a message
 * is longer than MAX_FRAME.  `from` is where a "\n" may first be (line). */
static long answer(conn *c, const uint8_t *data, size_t len, size_t from) {
    size_t pos = 0;
    if (framing == FRAMING_LEN) {
        while (len - pos >= 4) {
            const uint8_t *h = data + pos;
            size_t n = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
            if (n > MAX_FRAME)
                return -1;
            if (len - pos - 4 < n)
                break;
            if (is_quit(h + 4, n)) {
                c->ending = 1;
                return (long)len;
            }
            put_reply(h + 4, n);
            pos += 4 + n;
        }
    } else {
        const uint8_t *nl;
        while ((nl = memchr(data + from, '\n', len - from)) != NULL) {
            size_t n = (size_t)(nl - (data + pos));
            if (is_quit(data + pos, n)) {
                c->ending = 1;
                return (long)len;
            }
            put_reply(data + pos, n);
            pos = from = (size_t)(nl - data) + 1;
        }
        if (len - pos > MAX_FRAME)
            return -1;
    }
    return (long)pos;
}

static void close_conn(conn *c) {
    close(c->fd); /* which also takes it out of the epoll set */
    free(c->in);
    free(c->out);
    free(c);
}

/* Send what waits in c->out: 0 when all of it is out (the buffer freed),
 * 1 when some still waits, -1 on a socket error. */
static int flush_out(conn *c) {
    while (c->out_pos < c->out_len) {
        ssize_t sent = send(c->fd, c->out + c->out_pos, c->out_len - c->out_pos, MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno == EINTR)
                continue;
            return (errno == EAGAIN || errno == EWOULDBLOCK) ? 1 : -1;
        }
        c->out_pos += (size_t)sent;
    }
    free(c->out);
    c->out = NULL;
    c->out_pos = c->out_len = c->out_cap = 0;
    return 0;
}

/* Send the batch (after anything still waiting, never before it): 0 or -1
 * on a socket error.  What the socket does not take waits in c->out, and
 * the connection pauses if too much does. */
static int send_batch(conn *c) {
    size_t sent = 0;
    if (batch_len == 0)
        return 0;
    while (c->out_len == 0 && sent < batch_len) {
        ssize_t n = send(c->fd, batch + sent, batch_len - sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return -1;
            break;
        }
        sent += (size_t)n;
    }
    if (sent < batch_len) {
        reserve(&c->out, &c->out_cap, c->out_len, batch_len - sent);
        memcpy(c->out + c->out_len, batch + sent, batch_len - sent);
        c->out_len += batch_len - sent;
        c->paused = c->out_len - c->out_pos > OUT_HIGH;
    }
    batch_len = 0;
    return 0;
}

/* Keep data[pos, len) as the unfinished message (data is scratch or c->in). */
static void keep_input(conn *c, const uint8_t *data, size_t pos, size_t len) {
    size_t rest = len - pos;
    if (data == c->in) {
        memmove(c->in, c->in + pos, rest);
    } else if (rest > 0) {
        reserve(&c->in, &c->in_cap, 0, rest);
        memcpy(c->in, data + pos, rest);
    }
    c->in_len = rest;
    c->scanned = rest; /* line: the tail holds no "\n" */
    if (rest == 0 && c->in_cap > KEEP_INPUT) {
        free(c->in);
        c->in = NULL;
        c->in_cap = 0;
    }
}

/* Read and answer until the socket is empty (see the top of the file),
 * then send the replies: 0, or -1 when the connection is to be closed now. */
static int serve_input(conn *c, uint32_t events) {
    while (!c->ending && !c->paused) {
        uint8_t *into;
        size_t want;
        if (c->in_len > 0) {
            want = READ_SIZE;
            if (framing == FRAMING_LEN && c->in_len >= 4) { /* the whole frame at once */
                const uint8_t *h = c->in;
                size_t n = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
                if (n <= MAX_FRAME && 4 + n > c->in_len + want)
                    want = 4 + n - c->in_len;
            }
            reserve(&c->in, &c->in_cap, c->in_len, want);
            into = c->in + c->in_len;
        } else {
            want = READ_SIZE;
            into = scratch;
        }
        ssize_t n = recv(c->fd, into, want, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            return -1;
        }
        if (n == 0) {
            c->ending = 1; /* the peer's end: answer what came, then close */
            break;
        }
        long used;
        if (into == scratch) {
            used = answer(c, scratch, (size_t)n, 0);
            if (used < 0)
                return -1;
            if (!c->ending)
                keep_input(c, scratch, (size_t)used, (size_t)n);
        } else {
            size_t from = c->scanned;
            c->in_len += (size_t)n;
            used = answer(c, c->in, c->in_len, from);
            if (used < 0)
                return -1;
            if (!c->ending)
                keep_input(c, c->in, (size_t)used, c->in_len);
        }
        if (batch_len >= BATCH_HIGH && send_batch(c) != 0)
            return -1;
        if ((size_t)n < want && !(events & INPUT_ENDS))
            break; /* nothing more now: the next input brings an edge */
    }
    return send_batch(c);
}

/* One readiness event of a connection. */
static void serve_conn(conn *c, uint32_t events) {
    if (c->out_len > 0 && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
        int waiting = flush_out(c);
        if (waiting < 0) {
            close_conn(c);
            return;
        }
        if (waiting == 0 && c->paused) {
            c->paused = 0; /* the socket was left unread: no edge will say so */
            events |= EPOLLIN;
        }
    }
    if ((events & (EPOLLIN | INPUT_ENDS)) && serve_input(c, events) != 0) {
        close_conn(c);
        return;
    }
    if (c->ending && c->out_len == 0)
        close_conn(c);
}

static void accept_all(int listener) {
    static int warned;
    for (;;) {
        int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK && !warned++)
                perror("floor_server: accept"); /* EMFILE: the listener stays ready */
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* as asyncio and Trio */
        conn *c = calloc(1, sizeof *c);
        if (c == NULL)
            die("calloc");
        c->fd = fd;
        struct epoll_event ev = {.events = CONN_EVENTS, .data.ptr = c};
        if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0)
            die("epoll_ctl");
        uint8_t header[4] = {0, 0, 0, (uint8_t)GREETING_LEN};
        if (framing == FRAMING_LEN)
            put(header, 4);
        put(GREETING, GREETING_LEN);
        if (framing == FRAMING_LINE)
            put("\n", 1);
        if (send_batch(c) != 0)
            close_conn(c);
    }
}

static void usage(const char *argv0) {
    fprintf(stderr, "usage: %s --framing {len,line} [--port PORT]\n", argv0);
    exit(2);
}

/* The listening socket on 127.0.0.1:port, announced on stdout. */
static int listen_on(int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t addr_len = sizeof addr;
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, BACKLOG) != 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &addr_len) != 0)
        die("listen");
    printf("listening on 127.0.0.1:%d\n", ntohs(addr.sin_port));
    fflush(stdout);
    return fd;
}

int main(int argc, char **argv) {
    int port = 0, framing_given = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--framing") == 0 && i + 1 < argc) {
            const char *name = argv[++i];
            if (strcmp(name, "len") == 0)
                framing = FRAMING_LEN;
            else if (strcmp(name, "line") == 0)
                framing = FRAMING_LINE;
            else
                usage(argv[0]);
            framing_given = 1;
        } else if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
            char *end;
            long value = strtol(argv[++i], &end, 10);
            if (*end != '\0' || value < 0 || value > 65535)
                usage(argv[0]);
            port = (int)value;
        } else {
            usage(argv[0]);
        }
    }
    if (!framing_given)
        usage(argv[0]);
    signal(SIGPIPE, SIG_IGN);
    struct rlimit files;
    if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
        files.rlim_cur = files.rlim_max; /* thousands of connections */
        setrlimit(RLIMIT_NOFILE, &files);
    }
    epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (epoll_fd < 0)
        die("epoll_create1");
    int listener = listen_on(port);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL}; /* level-triggered */
    if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, listener, &ev) != 0)
        die("epoll_ctl");
    static struct epoll_event events[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(epoll_fd, events, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            if (events[i].data.ptr == NULL)
                accept_all(listener);
            else
                serve_conn(events[i].data.ptr, events[i].events);
        }
    }
}
