/*
 * trioecho pump: see pump.h for the contract and its rules.
 */
#define _GNU_SOURCE
#include "pump.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/types.h>

#define TE_PUMP_INPUT_EDGE (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)
#define TE_PUMP_INPUT_ENDS (EPOLLRDHUP | EPOLLHUP | EPOLLERR)
#define TE_PUMP_MIN_ROOM TE_PUMP_MIN_OUTPUT /* output room below which it grows first */

struct te_pump_state {
    int epoll_fd;
    int max_events;
    size_t turn_bytes;
    uint64_t turn;
    struct epoll_event *events;
    te_pump_conn **table; /* by descriptor: the attached state, or NULL */
    size_t table_cap;
    uint8_t *scratch;     /* where a connection with no unfinished message reads */
    size_t scratch_cap;
    uint8_t *out;         /* the replies to one read */
    size_t out_len;
    size_t out_cap;
    size_t out_base;      /* out_cap to shrink back to after a turn */
    uint8_t *inbox;       /* READ: what a turn read for Python */
    size_t inbox_len;
    size_t inbox_cap;
    size_t inbox_limit;   /* the bytes one turn reads for Python at most */
    size_t inbox_read;    /* ... read so far this turn */
    size_t last_input;    /* what the last read_for_python added to it */
    uint64_t *bounds;     /* READ: the items for Python (te_pump_items), two per */
    size_t bounds_len;    /* ... entries used */
    size_t bounds_cap;
    size_t last_count;    /* messages the last read_for_python split */
};

te_pump *te_pump_new(int epoll_fd, int max_events, size_t turn_bytes, size_t out_cap,
                     size_t inbox_cap) {
    if (epoll_fd < 0 || max_events < 1 || turn_bytes < 1 || out_cap < TE_PUMP_MIN_ROOM ||
        inbox_cap < 1 || inbox_cap > TE_PUMP_MAX_INBOX)
        return NULL;
    te_pump *p = calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    p->epoll_fd = epoll_fd;
    p->max_events = max_events;
    p->turn_bytes = turn_bytes;
    p->events = malloc((size_t)max_events * sizeof *p->events);
    p->out = malloc(out_cap);
    p->out_cap = p->out_base = out_cap;
    p->inbox_limit = inbox_cap;
    if (p->events == NULL || p->out == NULL) {
        te_pump_free(p);
        return NULL;
    }
    return p;
}

void te_pump_free(te_pump *p) {
    if (p == NULL)
        return;
    free(p->events);
    free(p->table);
    free(p->scratch);
    free(p->out);
    free(p->inbox);
    free(p->bounds);
    free(p);
}

const uint64_t *te_pump_items(const te_pump *p, size_t *count) {
    *count = p->bounds_len / 2;
    return p->bounds;
}

const uint8_t *te_pump_inbox(const te_pump *p, size_t *len) {
    *len = p->inbox_len;
    return p->inbox;
}

/* A connection's state with what every kind shares set (NULL: no memory). */
static te_pump_conn *new_conn(int kind, size_t read_size) {
    te_pump_conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->kind = kind;
    c->read_size = read_size;
    c->sink_fd = -1;
    c->served_turn = UINT64_MAX;
    return c;
}

te_pump_conn *te_pump_conn_new(void *session, int raw, size_t read_size) {
    if (session == NULL || read_size < 1)
        return NULL;
    te_pump_conn *c = new_conn(TE_PUMP_ECHO, read_size);
    if (c != NULL) {
        c->session = session;
        c->raw = raw;
    }
    return c;
}

te_pump_conn *te_pump_forward_new(void *framer, int sink_fd, uint64_t due, size_t read_size) {
    if (framer == NULL || sink_fd < 0 || read_size < 1)
        return NULL;
    te_pump_conn *c = new_conn(TE_PUMP_FORWARD, read_size);
    if (c != NULL) {
        c->framer = framer;
        c->due = due;
        c->sink_fd = sink_fd;
    }
    return c;
}

te_pump_conn *te_pump_reader_new(void *framer, size_t read_size) {
    if (read_size < 1)
        return NULL;
    te_pump_conn *c = new_conn(TE_PUMP_READ, read_size);
    if (c != NULL)
        c->framer = framer;
    return c;
}

static void drop_input(te_pump_conn *c) {
    free(c->in);
    c->in = NULL;
    c->in_len = c->in_cap = 0;
}

void te_pump_conn_clear_unsent(te_pump_conn *c) {
    free(c->unsent);
    c->unsent = NULL;
    c->unsent_len = 0;
    c->unsent_replies = 0;
}

void te_pump_conn_free(te_pump_conn *c) {
    if (c == NULL)
        return;
    drop_input(c);
    te_pump_conn_clear_unsent(c);
    free(c);
}

/* Make buf[0:len) the unconsumed input, with room for `room` more bytes
 * (0, or -1: no memory). */
static int set_input_room(te_pump_conn *c, const uint8_t *buf, size_t len, size_t room) {
    drop_input(c);
    if (len == 0)
        return 0;
    c->in = malloc(len + room);
    if (c->in == NULL)
        return -1;
    memcpy(c->in, buf, len);
    c->in_len = len;
    c->in_cap = len + room;
    return 0;
}

int te_pump_conn_set_input(te_pump_conn *c, const uint8_t *buf, size_t len) {
    return set_input_room(c, buf, len, c->read_size); /* the next read appends */
}

/* Make buf[0:len) the bytes owed to the task, `replies` of them not yet
 * counted as sent (0, or -1: no memory). */
static int set_unsent(te_pump_conn *c, const uint8_t *buf, size_t len, uint64_t replies) {
    te_pump_conn_clear_unsent(c);
    if (len == 0)
        return 0;
    c->unsent = malloc(len);
    if (c->unsent == NULL)
        return -1;
    memcpy(c->unsent, buf, len);
    c->unsent_len = len;
    c->unsent_replies = replies;
    return 0;
}

int te_pump_reply(te_pump_conn *c, int fd, const uint8_t *buf, size_t len) {
    size_t sent = 0;
    while (sent < len) {
        ssize_t n = send(fd, buf + sent, len - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                c->error = errno;
                c->status = 0;
                return TE_PUMP_SOCKET_ERROR;
            }
            break;
        }
        sent += (size_t)n;
        c->bytes_out += (uint64_t)n;
        if (n == 0)
            break; /* cannot happen with len > 0; never spin */
    }
    if (sent == len)
        return TE_PUMP_WAIT;
    if (set_unsent(c, buf + sent, len - sent, 0) != 0)
        return TE_PUMP_NO_MEMORY;
    return TE_PUMP_SHORT_SEND;
}

int te_pump_attach(te_pump *p, int fd, te_pump_conn *c) {
    if (fd < 0 || c == NULL)
        return -1;
    if ((size_t)fd >= p->table_cap) {
        size_t cap = p->table_cap ? p->table_cap : 64;
        while (cap <= (size_t)fd)
            cap *= 2;
        te_pump_conn **table = realloc(p->table, cap * sizeof *table);
        if (table == NULL)
            return -1;
        memset(table + p->table_cap, 0, (cap - p->table_cap) * sizeof *table);
        p->table = table;
        p->table_cap = cap;
    }
    p->table[fd] = c;
    return 0;
}

void te_pump_detach(te_pump *p, int fd) {
    if (fd >= 0 && (size_t)fd < p->table_cap)
        p->table[fd] = NULL;
}

static te_pump_conn *attached(const te_pump *p, int fd) {
    return fd >= 0 && (size_t)fd < p->table_cap ? p->table[fd] : NULL;
}

/* Make room for `want` more bytes at the end of c->in (0, or -1: no memory). */
static int reserve_input(te_pump_conn *c, size_t want) {
    if (c->in_cap - c->in_len >= want)
        return 0;
    size_t cap = c->in_len + want;
    uint8_t *in = realloc(c->in, cap);
    if (in == NULL)
        return -1;
    c->in = in;
    c->in_cap = cap;
    return 0;
}

static int reserve_scratch(te_pump *p, size_t want) {
    if (p->scratch_cap >= want)
        return 0;
    uint8_t *scratch = realloc(p->scratch, want);
    if (scratch == NULL)
        return -1;
    p->scratch = scratch;
    p->scratch_cap = want;
    return 0;
}

static int grow_output(te_pump *p) {
    size_t cap = p->out_cap * 2;
    uint8_t *out = realloc(p->out, cap);
    if (out == NULL)
        return -1;
    p->out = out;
    p->out_cap = cap;
    return 0;
}

/* Keep p->out[from:out_len) in c->unsent for the task. */
static int keep_unsent(te_pump *p, te_pump_conn *c, size_t from, uint64_t replies) {
    return set_unsent(c, p->out + from, p->out_len - from, replies);
}

/* Keep buf[pos:len) as the connection's unconsumed input. */
static int keep_input(te_pump_conn *c, const uint8_t *buf, size_t pos, size_t len) {
    size_t rest = len - pos;
    if (buf == c->in) {
        if (rest == 0) {
            drop_input(c);
        } else if (pos > 0) {
            memmove(c->in, c->in + pos, rest);
            c->in_len = rest;
        }
        return 0;
    }
    return te_pump_conn_set_input(c, buf + pos, rest);
}

/*
 * Answer the `n` bytes just read (appended to c->in, or in the scratch
 * buffer when c->in was empty) and send the replies.  TE_PUMP_WAIT to go
 * on reading; any other outcome stops this connection's service.
 */
static int answer(te_pump *p, te_pump_conn *c, int fd, const uint8_t *buf, size_t len) {
    size_t pos = 0;
    uint64_t replies = 0, received = 0;
    te_echo_result r;
    int status;
    int stalled = 0;
    p->out_len = 0;
    for (;;) {
        if (p->out_cap - p->out_len < TE_PUMP_MIN_ROOM && grow_output(p) != 0)
            return TE_PUMP_NO_MEMORY;
        status = te_echo_feed((te_echo *)c->session, buf + pos, len - pos, p->out + p->out_len,
                              p->out_cap - p->out_len, &r);
        pos += r.consumed;
        p->out_len += r.produced;
        replies += r.replies;
        received += r.received;
        if (status != TE_ECHO_MORE)
            break;
        /* MORE always produces (echo.h); anything else would spin. */
        stalled = (r.consumed == 0 && r.produced == 0) ? stalled + 1 : 0;
        if (stalled > 1) {
            status = TE_ECHO_BAD_CONFIG;
            break;
        }
    }
    c->messages_in += received;
    if (received)
        c->progress++;
    if (status != TE_ECHO_NEED) {
        /* The session is over (or was misused): the replies before its end
         * go to the task, which sends them and ends the session. */
        drop_input(c);
        c->status = status;
        c->length = r.length;
        if (keep_unsent(p, c, 0, replies) != 0)
            return TE_PUMP_NO_MEMORY;
        return TE_PUMP_ENDED;
    }
    if (c->raw)
        pos = len; /* each read is one message: nothing is kept */
    if (keep_input(c, buf, pos, len) != 0)
        return TE_PUMP_NO_MEMORY;
    c->messages_out += replies;
    if (p->out_len > 0) {
        ssize_t sent = send(fd, p->out, p->out_len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (sent < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                c->error = errno;
                c->status = 0;
                return TE_PUMP_SOCKET_ERROR;
            }
            sent = 0;
        }
        c->bytes_out += (uint64_t)sent;
        if ((size_t)sent < p->out_len) {
            if (keep_unsent(p, c, (size_t)sent, 0) != 0)
                return TE_PUMP_NO_MEMORY;
            return TE_PUMP_SHORT_SEND;
        }
    }
    if (c->in_len != c->accounted)
        return TE_PUMP_ACCOUNT;
    return TE_PUMP_WAIT;
}

/*
 * Pass on the `len` bytes of buf (c->in, or the scratch buffer) that the
 * forwarding scan lets through, to the sink; keep an incomplete header.
 * TE_PUMP_WAIT to go on reading.
 */
static int pass_on(te_pump_conn *c, const uint8_t *buf, size_t len) {
    uint64_t due = c->due;
    te_result r;
    te_length_forward((const te_length_framer *)c->framer, buf, len, &due, &r);
    if (r.status != TE_OK) {
        /* A bad header: the read is kept as it came (the scan kept nothing
         * but `due`, left as it was), for Python to scan again and raise
         * the framer's error after passing on the bytes before it. */
        c->status = r.status;
        c->length = r.length;
        if (keep_input(c, buf, 0, len) != 0)
            return TE_PUMP_NO_MEMORY;
        c->accounted = c->in_len;
        return TE_PUMP_ENDED;
    }
    c->due = due;
    c->messages_in += r.frames;
    if (r.frames)
        c->progress++;
    size_t pass = r.consumed;
    size_t sent = 0;
    if (pass > 0) {
        ssize_t n = send(c->sink_fd, buf, pass, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                c->error = errno;
                c->status = 1; /* the sink's error, not the source's */
                return TE_PUMP_SOCKET_ERROR;
            }
            n = 0;
        }
        sent = (size_t)n;
        c->bytes_out += sent;
    }
    int outcome = TE_PUMP_WAIT;
    if (sent < pass) {
        /* The sink is full: the rest goes to the task, which waits for it. */
        if (set_unsent(c, buf + sent, pass - sent, r.frames) != 0)
            return TE_PUMP_NO_MEMORY;
        outcome = TE_PUMP_SHORT_SEND;
    } else {
        c->messages_out += r.frames;
    }
    if (keep_input(c, buf, pass, len) != 0) /* an incomplete header */
        return TE_PUMP_NO_MEMORY;
    c->accounted = c->in_len; /* a header's few bytes: not accounted */
    return outcome;
}

/* Make room for `want` more bytes in the inbox (0, or -1: no memory). */
static int reserve_inbox(te_pump *p, size_t want) {
    if (p->inbox_cap - p->inbox_len >= want)
        return 0;
    size_t cap = p->inbox_cap ? p->inbox_cap : 4096;
    while (cap - p->inbox_len < want)
        cap *= 2;
    uint8_t *inbox = realloc(p->inbox, cap);
    if (inbox == NULL)
        return -1;
    p->inbox = inbox;
    p->inbox_cap = cap;
    return 0;
}

static int add_bounds(te_pump *p, size_t start, size_t end) {
    if (p->bounds_cap - p->bounds_len < 2) {
        size_t cap = p->bounds_cap ? 2 * p->bounds_cap : 64;
        uint64_t *bounds = realloc(p->bounds, cap * sizeof *bounds);
        if (bounds == NULL)
            return -1;
        p->bounds = bounds;
        p->bounds_cap = cap;
    }
    p->bounds[p->bounds_len++] = start;
    p->bounds[p->bounds_len++] = end;
    return 0;
}

/*
 * READ with a framer: split inbox[start:inbox_len) (the unfinished message
 * kept, then this service's reads) into messages; keep the rest in `in`.
 * The outcome: MESSAGES(_MORE) with p->last_count messages (`more` picks
 * which), ACCOUNT when there is none but the unfinished message changed
 * size, WAIT; a bad header also sets `pending` to TE_PUMP_ENDED.
 */
static int split_input(te_pump *p, te_pump_conn *c, size_t start, int more) {
    const te_length_framer *f = (const te_length_framer *)c->framer;
    const uint8_t *run = p->inbox + start;
    size_t len = p->inbox_len - start;
    size_t pos = 0, count = 0, bounds_at = p->bounds_len;
    te_result r;
    for (;;) {
        te_length_scan(f, run, len, pos, NULL, 0, NULL, 0, &r);
        if (r.layout == TE_LAYOUT_ONE) {
            if (add_bounds(p, start + r.start, start + r.end) != 0)
                goto no_memory;
            count++;
        }
        if (r.consumed <= pos && r.status == TE_MORE)
            goto no_memory; /* cannot happen (framer.h); never spin */
        pos = r.consumed;
        if (r.status != TE_MORE)
            break;
    }
    if (r.status < 0) {
        /* A bad header: the bytes from it on go back to Python, whose
         * framer raises its own error for them. */
        c->status = r.status;
        c->length = r.length;
        c->pending = TE_PUMP_ENDED;
        more = 1;
    }
    /* Kept at its size: the next service copies it into the inbox. */
    if (set_input_room(c, run + pos, len - pos, 0) != 0)
        goto no_memory;
    p->inbox_len = start + pos; /* the rest is in `in` now */
    p->last_count = count;
    if (count > 0)
        return more ? TE_PUMP_MESSAGES_MORE : TE_PUMP_MESSAGES;
    if (c->pending)
        return TE_PUMP_AGAIN; /* its next service hands it back */
    if (c->in_len != c->accounted)
        return TE_PUMP_ACCOUNT;
    return more ? TE_PUMP_AGAIN : TE_PUMP_WAIT;
no_memory:
    p->bounds_len = bounds_at; /* no items for an outcome that has none */
    return TE_PUMP_NO_MEMORY;
}

/*
 * READ: recv into the inbox until a short read, or the turn's bytes or the
 * inbox's room are used; TE_PUMP_INPUT(_MORE) if it read anything (its
 * length in p->last_input).  An end of the input or an error after bytes
 * waits in `pending` for the next service, so Python answers the bytes first.
 */
static int read_into_inbox(te_pump *p, te_pump_conn *c, int fd);

static int read_for_python(te_pump *p, te_pump_conn *c, int fd) {
    int outcome = read_into_inbox(p, c, fd);
    if (outcome != TE_PUMP_INPUT && outcome != TE_PUMP_INPUT_MORE)
        return outcome;
    size_t start = p->inbox_len - p->last_input;
    if (c->framer != NULL)
        return split_input(p, c, start, outcome == TE_PUMP_INPUT_MORE);
    /* The bytes are one item for Python, as each message of a split is. */
    if (add_bounds(p, start, p->inbox_len) != 0)
        return TE_PUMP_NO_MEMORY;
    return outcome;
}

/* read_for_python's reads: INPUT(_MORE), with the bytes in the inbox (a
 * framer's unfinished message first), or a hand-back, WAIT or AGAIN. */
static int read_into_inbox(te_pump *p, te_pump_conn *c, int fd) {
    size_t budget = p->turn_bytes;
    size_t start = p->inbox_len;
    p->last_input = 0;
    if (c->pending) {
        int pending = c->pending;
        c->pending = 0;
        return pending;
    }
    size_t kept = c->framer != NULL ? c->in_len : 0;
    if (kept > 0) {
        if (reserve_inbox(p, kept) != 0)
            return TE_PUMP_NO_MEMORY;
        memcpy(p->inbox + p->inbox_len, c->in, kept);
        p->inbox_len += kept;
        drop_input(c);
    }
    for (;;) {
        size_t room = p->inbox_limit - p->inbox_read;
        size_t want = c->read_size < budget ? c->read_size : budget;
        if (want > room)
            want = room;
        if (want == 0) { /* the inbox is full: the next turn reads on */
            p->last_input = p->inbox_len - start;
            return p->last_input > 0 ? TE_PUMP_INPUT_MORE : TE_PUMP_AGAIN;
        }
        if (reserve_inbox(p, want) != 0)
            return TE_PUMP_NO_MEMORY;
        ssize_t n = recv(fd, p->inbox + p->inbox_len, want, MSG_DONTWAIT);
        int ending = 0;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            c->error = errno;
            c->status = 0;
            ending = TE_PUMP_SOCKET_ERROR;
        } else if (n == 0) {
            ending = TE_PUMP_END_OF_INPUT;
        }
        if (ending) {
            if (p->inbox_len == start)
                return ending;
            c->pending = ending;
            p->last_input = p->inbox_len - start;
            return TE_PUMP_INPUT_MORE;
        }
        p->inbox_len += (size_t)n;
        p->inbox_read += (size_t)n;
        c->bytes_in += (uint64_t)n;
        if ((size_t)n < want && !c->input_ended)
            break; /* nothing more: the next input brings an edge */
        budget -= (size_t)n;
        if (budget == 0) {
            p->last_input = p->inbox_len - start;
            return TE_PUMP_INPUT_MORE;
        }
    }
    p->last_input = p->inbox_len - start;
    return p->last_input > 0 ? TE_PUMP_INPUT : TE_PUMP_WAIT;
}

/* Read, answer and send until the socket is empty or the turn's bytes are used. */
static int serve_conn(te_pump *p, te_pump_conn *c, int fd) {
    size_t budget = p->turn_bytes;
    c->served_turn = p->turn;
    if (c->kind == TE_PUMP_READ)
        return read_for_python(p, c, fd);
    for (;;) {
        size_t want = c->read_size < budget ? c->read_size : budget;
        uint8_t *into;
        if (c->in_len > 0) {
            if (reserve_input(c, want) != 0)
                return TE_PUMP_NO_MEMORY;
            into = c->in + c->in_len;
        } else {
            if (reserve_scratch(p, want) != 0)
                return TE_PUMP_NO_MEMORY;
            into = p->scratch;
        }
        ssize_t n = recv(fd, into, want, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return TE_PUMP_WAIT;
            if (errno == EINTR)
                continue;
            c->error = errno;
            c->status = 0;
            return TE_PUMP_SOCKET_ERROR;
        }
        if (n == 0)
            return TE_PUMP_END_OF_INPUT;
        c->bytes_in += (uint64_t)n;
        int outcome;
        const uint8_t *buf = p->scratch;
        size_t len = (size_t)n;
        if (c->in_len > 0) {
            c->in_len += (size_t)n;
            buf = c->in;
            len = c->in_len;
        }
        if (c->kind == TE_PUMP_FORWARD)
            outcome = pass_on(c, buf, len);
        else
            outcome = answer(p, c, fd, buf, len);
        if (outcome != TE_PUMP_WAIT)
            return outcome;
        if ((size_t)n < want && !c->input_ended)
            return TE_PUMP_WAIT; /* nothing more: the next input brings an edge */
        budget -= (size_t)n;
        if (budget == 0)
            return TE_PUMP_AGAIN;
    }
}

static int handed_back(int outcome) {
    return outcome >= TE_PUMP_END_OF_INPUT && outcome <= TE_PUMP_NO_MEMORY;
}

/* Serve the attached `c` once this turn; its outcome, detached if handed back. */
static int serve_once(te_pump *p, te_pump_conn *c, int fd) {
    if (c->served_turn == p->turn) {
        /* Once a turn: this edge waits for the next one -- unless the
         * service this turn already asked for one (AGAIN, ACCOUNT,
         * INPUT_MORE). */
        int asked = c->turn_outcome == TE_PUMP_AGAIN || c->turn_outcome == TE_PUMP_ACCOUNT ||
                    c->turn_outcome == TE_PUMP_INPUT_MORE ||
                    c->turn_outcome == TE_PUMP_MESSAGES_MORE;
        return asked ? TE_PUMP_WAIT : TE_PUMP_AGAIN;
    }
    int outcome = serve_conn(p, c, fd);
    c->turn_outcome = outcome;
    if (handed_back(outcome))
        te_pump_detach(p, fd);
    return outcome;
}

static void shrink_output(te_pump *p) {
    if (p->inbox_cap > p->out_base && p->inbox_len <= p->out_base) {
        /* Keep at most what the output keeps; Python copies the inbox out
         * before the next call, so its first out_base bytes are kept. */
        uint8_t *inbox = realloc(p->inbox, p->out_base);
        if (inbox != NULL) {
            p->inbox = inbox;
            p->inbox_cap = p->out_base;
        }
    }
    if (p->out_cap > p->out_base) {
        uint8_t *out = realloc(p->out, p->out_base);
        if (out != NULL) {
            p->out = out;
            p->out_cap = p->out_base;
        }
    }
}

/* An outcome's mask: an input's length, or the epoll events seen. */
static uint32_t event_mask(const te_pump *p, uint32_t mask, int outcome) {
    if (outcome == TE_PUMP_INPUT || outcome == TE_PUMP_INPUT_MORE)
        return (uint32_t)p->last_input;
    if (outcome == TE_PUMP_MESSAGES || outcome == TE_PUMP_MESSAGES_MORE)
        return (uint32_t)p->last_count;
    return mask;
}

/* A turn's (or a serve's) inbox starts empty: Python took the last one. */
static void empty_inbox(te_pump *p) {
    p->inbox_len = p->inbox_read = p->bounds_len = 0;
}

int te_pump_serve(te_pump *p, int fd, uint32_t *mask) {
    te_pump_conn *c = attached(p, fd);
    *mask = 0;
    if (c == NULL)
        return TE_PUMP_EVENT;
    c->served_turn = UINT64_MAX; /* outside a turn: always served */
    empty_inbox(p);
    int outcome = serve_once(p, c, fd);
    c->served_turn = UINT64_MAX;
    *mask = event_mask(p, 0, outcome);
    shrink_output(p);
    return outcome;
}

int te_pump_turn(te_pump *p, const int *owed, int n_owed, te_pump_event *out, int out_cap) {
    if (n_owed < 0 || out_cap < n_owed + 2 * p->max_events) {
        errno = EINVAL;
        return -1;
    }
    int n_out = 0;
    p->turn++;
    empty_inbox(p);
    for (int i = 0; i < n_owed; i++) {
        te_pump_conn *c = attached(p, owed[i]);
        if (c == NULL)
            continue; /* handed back or detached since */
        int outcome = serve_once(p, c, owed[i]);
        if (outcome != TE_PUMP_WAIT)
            out[n_out++] = (te_pump_event){owed[i], event_mask(p, 0, outcome), outcome};
    }
    int ready = epoll_wait(p->epoll_fd, p->events, p->max_events, 0);
    if (ready < 0) {
        if (errno != EINTR)
            return -1;
        ready = 0;
    }
    for (int i = 0; i < ready; i++) {
        int fd = p->events[i].data.fd;
        uint32_t mask = p->events[i].events;
        te_pump_conn *c = attached(p, fd);
        if (c == NULL) {
            out[n_out++] = (te_pump_event){fd, mask, TE_PUMP_EVENT};
            continue;
        }
        if (mask & TE_PUMP_INPUT_ENDS)
            c->input_ended = 1;
        if (c->want_output && (mask & (EPOLLOUT | EPOLLHUP | EPOLLERR)))
            out[n_out++] = (te_pump_event){fd, mask & ~(uint32_t)(EPOLLIN | EPOLLRDHUP),
                                           TE_PUMP_EVENT};
        if (!(mask & TE_PUMP_INPUT_EDGE))
            continue; /* room to send: Python is told only if it waits for it */
        int outcome = serve_once(p, c, fd);
        if (outcome != TE_PUMP_WAIT)
            out[n_out++] = (te_pump_event){fd, event_mask(p, mask, outcome), outcome};
    }
    shrink_output(p);
    return n_out;
}
