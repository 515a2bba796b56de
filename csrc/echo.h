/*
 * trioecho echo session: the echo service's transform, sans-IO.
 *
 * It takes the bytes a peer sent and writes the bytes to send back: for
 * every complete message, the message followed by `suffix`, framed the way
 * the message was.  A message equal to `stop` ends the session (consumed,
 * not answered).  It does no I/O, allocates nothing, keeps no global state
 * and knows nothing of Python; all state lives in a te_echo the caller owns.
 *
 * Buffer contract (the framer's): the caller keeps the bytes received but
 * not yet consumed in one buffer whose first byte is the first unconsumed
 * byte; after each call it drops `result.consumed` bytes from the front and
 * appends new bytes at the end before the next call.  A byte is examined
 * once however the stream is chunked (linear time).  In raw framing every
 * call's buffer is one message.
 *
 * Output: replies go to out[0:out_cap), `result.produced` bytes.  A reply
 * that does not fit is written in pieces over several calls (TE_ECHO_MORE):
 * any reply the wire format can carry is produced, whatever out_cap is.
 *
 * Progress: every call consumes input, produces output, or returns a status
 * that is not TE_ECHO_MORE.  TE_ECHO_MORE always comes with produced > 0.
 */
#ifndef TRIOECHO_ECHO_H
#define TRIOECHO_ECHO_H

#include <stddef.h>
#include <stdint.h>

#include "framer.h"

/* cffi:begin -- everything up to cffi:end is also read by build_ffi.py */

#define TE_ECHO_MAX_AFFIX 64 /* longest suffix, longest stop message */

/* Framings (te_echo_init's `framing`). */
#define TE_ECHO_LEN 0
#define TE_ECHO_LINE 1
#define TE_ECHO_RAW 2

/* Status codes of te_echo_feed (result.status). */
#define TE_ECHO_NEED 0       /* every complete message answered: feed more input */
#define TE_ECHO_MORE 1       /* out is full: send it, call again with the rest */
#define TE_ECHO_STOP 2       /* the stop message was consumed; the session is over */
#define TE_ECHO_TOO_LONG 3   /* a message over max_frame (result.length); over */
#define TE_ECHO_DROPPED 4    /* discard mode: an over-long line (result.length) is
                                dropped; call again, the session goes on */
#define TE_ECHO_BAD_REPLY 5  /* a line's reply cannot be sent as one line
                                (result.length: TE_ECHO_REPLY_*); over */
#define TE_ECHO_BROKEN 6     /* called after STOP, TOO_LONG or BAD_REPLY */
#define TE_ECHO_BAD_CONFIG -1 /* an init argument is out of range, or a feed
                                 without room for output or without the frame
                                 a reply is in progress for */

/* Why a line's reply cannot be sent (result.length with TE_ECHO_BAD_REPLY). */
#define TE_ECHO_REPLY_DELIMITER 1 /* it holds the delimiter before its end */
#define TE_ECHO_REPLY_CR 2        /* it ends in a '\r' the peer would strip */

typedef struct {
    int status;          /* one of TE_ECHO_* */
    size_t consumed;     /* drop this many bytes from the buffer's front */
    size_t produced;     /* bytes written to out */
    size_t replies;      /* replies completed in out by this call */
    size_t received;     /* messages consumed by this call (replies + stop) */
    uint64_t length;     /* TOO_LONG, DROPPED: the (least) length seen */
} te_echo_result;

/* A session; its fields are below, outside what cffi reads: cffi sizes it. */
typedef struct te_echo_state te_echo;

/*
 * Set up a session.  `framing` is TE_ECHO_LEN (header_bytes 1, 2, 4 or 8),
 * TE_ECHO_LINE (delimiter of 1..TE_MAX_DELIMITER bytes) or TE_ECHO_RAW.
 * Refuses (TE_ECHO_BAD_CONFIG) a length-prefixed configuration whose
 * largest reply, max_frame + suffix_len, cannot be written in the header.
 */
int te_echo_init(te_echo *e, int framing, unsigned header_bytes, int little_endian,
                 const uint8_t *delimiter, size_t delimiter_len, int strip_cr,
                 int discard, uint64_t max_frame, const uint8_t *suffix,
                 size_t suffix_len, const uint8_t *stop, size_t stop_len);

/* Answer the complete messages of buf[0:len); see the contract above. */
int te_echo_feed(te_echo *e, const uint8_t *buf, size_t len, uint8_t *out,
                 size_t out_cap, te_echo_result *result);

/* cffi:end */

struct te_echo_state {
    int framing;
    te_length_framer length;
    te_line_framer line;
    uint8_t suffix[TE_ECHO_MAX_AFFIX];
    size_t suffix_len;
    uint8_t stop[TE_ECHO_MAX_AFFIX];
    size_t stop_len;
    int suffix_safe;     /* lines: no reply can hold the delimiter early */
    int over;            /* STOP, TOO_LONG or BAD_REPLY was returned */
    /* The reply being written: it answers the frame at the buffer's front. */
    int replying;
    size_t frame_len;    /* the frame's bytes in the input */
    size_t payload_off;  /* where its payload starts in the frame */
    size_t payload_len;
    size_t reply_done;   /* bytes of the reply already written */
    uint8_t header[8];   /* the reply's length header */
};

#endif /* TRIOECHO_ECHO_H */
