/*
 * trioecho pump: serves echo sessions on sockets, in C, for the readiness hub.
 *
 * The one C unit that does I/O.  Its rules (ARCHITECTURE.md):
 *   - it only calls epoll_wait with timeout 0, recv, send (MSG_NOSIGNAL) on
 *     sockets Python gave it, and epoll_ctl never: Python registers them;
 *   - it never blocks, closes, accepts or calls into Python;
 *   - Python owns every connection: it attaches a connection's state to its
 *     descriptor while the connection's task is parked, and detaches it
 *     before that task runs again and before the socket is closed, so a
 *     reused descriptor number is never served with an old connection;
 *   - it has no framing code: a connection is served by the C echo session
 *     (csrc/echo.c), or forwarded to another socket checked by the C
 *     framer's forwarding scan (te_length_forward), whose state the caller
 *     owns.
 *
 * A turn (te_pump_turn) serves the connections owed a turn, then every
 * event of one epoll_wait(0) on the hub's edge-triggered set.  Serving a
 * connection: recv until a short read (at most `turn_bytes` per turn),
 * feed each read to the session, send the replies of each read in one
 * send (READ: recv until a short read into the inbox, for Python: TE_PUMP_INPUT).
 * Events and outcomes Python must see go to `out`: an event on a
 * descriptor with no state attached (the hub handles it as before), a
 * connection owed another turn, a connection whose memory account must be
 * updated, and the hand-backs: end of input, the session's end, a short
 * send, a socket error.  A connection handed back is detached.
 *
 * Memory: a connection holds no buffer while it has no unfinished message
 * and no unsent bytes; the pump's scratch buffers are its own.
 */
#ifndef TRIOECHO_PUMP_H
#define TRIOECHO_PUMP_H

#include <stddef.h>
#include <stdint.h>

#include "echo.h"
#include "framer.h"

/* cffi:begin -- everything up to cffi:end is also read by build_ffi.py */

#define TE_PUMP_MIN_OUTPUT 64 /* the smallest output buffer te_pump_new takes */
#define TE_PUMP_MAX_INBOX 0x7fffffffu /* the largest inbox (an event's mask holds a length) */

/* What a connection is served with (te_pump_conn.kind). */
#define TE_PUMP_ECHO 0    /* answered by its echo session */
#define TE_PUMP_FORWARD 1 /* passed on to sink_fd as it arrives, every header
                             checked by its length framer's forwarding scan */
#define TE_PUMP_READ 2    /* read for Python (TE_PUMP_INPUT), which answers it
                             with te_pump_reply: a session with Python code;
                             with a length framer, split into messages first
                             (TE_PUMP_MESSAGES) */

/* Outcomes (te_pump_event.outcome, te_pump_serve's return). */
#define TE_PUMP_WAIT 0         /* it read until the socket had nothing more */
#define TE_PUMP_AGAIN 1        /* it used its bytes for this turn: owe it a turn */
#define TE_PUMP_EVENT 2        /* no state attached: the event, for the hub */
#define TE_PUMP_ACCOUNT 3      /* its unfinished message changed size: update the
                                  memory account, then owe it a turn (or hand it back) */
#define TE_PUMP_END_OF_INPUT 4 /* the peer ended its input; handed back */
#define TE_PUMP_ENDED 5        /* ECHO: the session ended (status, length); the
                                  replies before the end are in unsent.  FORWARD:
                                  a bad header (status); the read is kept unsent
                                  in `in`, for Python to scan again.  Handed back */
#define TE_PUMP_SHORT_SEND 6   /* the socket (FORWARD: the sink) took part of the
                                  bytes; the rest is in unsent; handed back */
#define TE_PUMP_SOCKET_ERROR 7 /* recv or send failed (error: errno; status: 1 if it
                                  was the send to the sink); handed back */
#define TE_PUMP_NO_MEMORY 8    /* malloc failed; handed back (input is lost) */
#define TE_PUMP_INPUT 9        /* READ: it read bytes for Python (`mask` of them: the
                                  next item of te_pump_items), which answers them
                                  (te_pump_reply); not handed back */
#define TE_PUMP_INPUT_MORE 10  /* READ: INPUT, and owe it a turn: its turn's bytes
                                  or the inbox's room were used, or the end of the
                                  input or an error came after the bytes (its next
                                  service hands it back with that) */
#define TE_PUMP_MESSAGES 11    /* READ with a framer: the next `mask` items of
                                  te_pump_items, its messages, for Python to
                                  answer; an unfinished one stays in `in`.  A bad
                                  header ends the bytes split: its next service is
                                  TE_PUMP_ENDED (status), the bytes from that header
                                  on in `in`, for Python to scan again */
#define TE_PUMP_MESSAGES_MORE 12 /* MESSAGES, and owe it a turn (as INPUT_MORE) */

typedef struct {
    int fd;
    uint32_t mask;  /* the epoll events seen (for TE_PUMP_EVENT, or with a hand-back) */
    int outcome;
} te_pump_event;

/* One connection's state, owned by Python (te_pump_conn_new/_free). */
typedef struct {
    int kind;               /* TE_PUMP_ECHO or TE_PUMP_FORWARD */
    void *session;          /* ECHO: its te_echo session (not owned) */
    void *framer;           /* FORWARD: its te_length_framer (not owned) */
    uint64_t due;           /* FORWARD: what the frame in progress still owes */
    int sink_fd;            /* FORWARD: where its input goes */
    int want_output;        /* Python waits to write this socket: report its
                               output edges (TE_PUMP_EVENT) */
    int raw;                /* raw framing: each read is one message */
    size_t read_size;       /* bytes asked of each recv */
    uint8_t *in;            /* the unconsumed input (an unfinished message) */
    size_t in_len;
    size_t in_cap;
    uint8_t *unsent;        /* bytes to send, for the task (hand-backs) */
    size_t unsent_len;
    uint64_t unsent_replies; /* replies (frames) in unsent not counted as sent yet */
    size_t accounted;       /* what the memory account holds of in_len */
    uint64_t messages_in;   /* counters, taken and reset by Python */
    uint64_t messages_out;  /* FORWARD: frames and bytes the sink took */
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t progress;      /* reads that completed a message */
    int status;             /* TE_PUMP_ENDED: the session's status */
    uint64_t length;        /* ... and its length */
    int error;              /* TE_PUMP_SOCKET_ERROR: errno */
    int input_ended;        /* an end-of-input edge came: read to the end */
    int pending;            /* READ: the hand-back its next service returns (the
                               end of the input or an error, after bytes) */
    uint64_t served_turn;   /* private to the pump: the turn it was served in */
    int turn_outcome;       /* ... and what that service returned */
} te_pump_conn;

typedef struct te_pump_state te_pump;

/* inbox_cap: the bytes one turn reads for Python at most (at least 1). */
te_pump *te_pump_new(int epoll_fd, int max_events, size_t turn_bytes, size_t out_cap,
                     size_t inbox_cap);
void te_pump_free(te_pump *p);
/*
 * READ: the bytes the last te_pump_turn (or te_pump_serve) read for
 * Python (the next call reuses the buffer), and its items: [start, end)
 * offsets in those bytes, two per item, in the order of the outcomes --
 * one item per TE_PUMP_INPUT(_MORE), `mask` (its messages) per
 * TE_PUMP_MESSAGES(_MORE).
 */
const uint8_t *te_pump_inbox(const te_pump *p, size_t *len);
const uint64_t *te_pump_items(const te_pump *p, size_t *count);

te_pump_conn *te_pump_conn_new(void *session, int raw, size_t read_size);
te_pump_conn *te_pump_forward_new(void *framer, int sink_fd, uint64_t due, size_t read_size);
/* READ; with `framer` (a te_length_framer, not owned; or NULL) split. */
te_pump_conn *te_pump_reader_new(void *framer, size_t read_size);
void te_pump_conn_free(te_pump_conn *c);
/* Replace the unconsumed input with buf[0:len) (0 on success, -1: no memory). */
int te_pump_conn_set_input(te_pump_conn *c, const uint8_t *buf, size_t len);
/* Drop the unsent bytes once Python has taken them. */
void te_pump_conn_clear_unsent(te_pump_conn *c);
/*
 * READ: send Python's replies buf[0:len) on fd now.  TE_PUMP_WAIT: all
 * sent; TE_PUMP_SHORT_SEND: the rest is in unsent; TE_PUMP_SOCKET_ERROR
 * (error: errno); TE_PUMP_NO_MEMORY.  Counts bytes_out.
 */
int te_pump_reply(te_pump_conn *c, int fd, const uint8_t *buf, size_t len);

/* Serve `c` on `fd` from now on (until a hand-back or te_pump_detach). */
int te_pump_attach(te_pump *p, int fd, te_pump_conn *c);
/* Stop serving `fd` (idempotent). */
void te_pump_detach(te_pump *p, int fd);
/* Serve `fd` now, outside a turn; its outcome (TE_PUMP_EVENT if detached),
 * and in *mask the length of its input (TE_PUMP_INPUT, _MORE) or its
 * messages' count (TE_PUMP_MESSAGES, _MORE). */
int te_pump_serve(te_pump *p, int fd, uint32_t *mask);
/*
 * One turn: serve owed[0:n_owed), then one epoll_wait(0).  Writes the
 * events and outcomes for Python to out (at most n_owed + 2 * max_events:
 * out_cap must be that large, or it fails with EINVAL); returns how many,
 * or -1 with errno if epoll_wait failed.
 */
int te_pump_turn(te_pump *p, const int *owed, int n_owed, te_pump_event *out, int out_cap);

/* cffi:end */

#endif /* TRIOECHO_PUMP_H */
