/*
 * trioecho framer: a sans-IO frame splitter.
 *
 * It scans bytes the caller gives it and reports frame boundaries and errors.
 * It does no I/O, allocates nothing, keeps no global state and knows nothing
 * of Python.  All state lives in a struct the caller owns.
 *
 * Buffer contract (both framings): the caller keeps the bytes it has received
 * but not yet consumed in one buffer whose first byte is the first
 * unconsumed byte.  After each scan it drops exactly `result.consumed` bytes
 * from the front of that buffer and appends new bytes at the end before the
 * next scan.  The framer stores positions relative to that buffer, so a
 * byte is examined once however the stream is chunked (linear time).
 *
 * Limits: every length a peer controls is compared with `max_frame` before
 * it is trusted.  A length prefix over the limit fails as soon as the header
 * is complete; an unfinished line fails as soon as it can no longer end
 * within the limit.
 */
#ifndef TRIOECHO_FRAMER_H
#define TRIOECHO_FRAMER_H

#include <stddef.h>
#include <stdint.h>

/* cffi:begin -- everything up to cffi:end is also read by build_ffi.py */

#define TE_MAX_DELIMITER 8

/* Status codes returned by the scan functions. */
#define TE_OK 0            /* every complete frame was reported */
#define TE_MORE 1          /* the output arrays filled up: scan again */
#define TE_TOO_LONG -1     /* a frame exceeds max_frame: see result.length */
#define TE_BAD_CONFIG -2   /* an init argument is out of range */

typedef struct {
    int status;          /* one of TE_* */
    size_t frames;       /* number of complete frames reported by this scan */
    size_t start;        /* lines: reported lines occupy buf[start:end) */
    size_t end;          /*        (bytes before start were discarded)   */
    size_t consumed;     /* drop this many bytes from the buffer's front */
    size_t cr_lines;     /* lines: how many reported lines had a '\r' stripped */
    uint64_t length;     /* TE_TOO_LONG: the (minimum) length seen */
} te_result;

typedef struct {
    uint64_t max_frame;      /* largest payload accepted, in bytes */
    unsigned header_bytes;   /* 1, 2, 4 or 8 */
    int little_endian;       /* 0: big endian (network order) */
} te_length_framer;

typedef struct {
    uint8_t delimiter[8];     /* TE_MAX_DELIMITER */
    size_t delimiter_len;    /* 1..TE_MAX_DELIMITER */
    uint64_t max_frame;      /* largest line accepted, delimiter excluded */
    int strip_cr;            /* drop one '\r' right before the delimiter */
    int discard;             /* over-long line: 0 fail, 1 drop it and go on */
    /* scan state, relative to the caller's buffer */
    size_t search_from;      /* first position a delimiter may start at */
    int discarding;          /* dropping bytes through the next delimiter */
} te_line_framer;

int te_length_init(te_length_framer *f, unsigned header_bytes,
                   int little_endian, uint64_t max_frame);

/*
 * Scan buf[pos:len), where pos is a frame boundary (0 on a fresh buffer).
 * Writes the payload bounds of up to `cap` complete frames to starts[] and
 * ends[] (offsets into buf) and sets result->end and result->consumed to the
 * end of the last one (pos when there is none).  Returns result->status:
 * TE_OK, TE_MORE (cap reached: call again with pos = result->consumed) or
 * TE_TOO_LONG (frames before the bad header are still reported).
 */
int te_length_scan(const te_length_framer *f, const uint8_t *buf, size_t len,
                   size_t pos, size_t *starts, size_t *ends, size_t cap,
                   te_result *result);

int te_line_init(te_line_framer *f, const uint8_t *delimiter,
                 size_t delimiter_len, int strip_cr, int discard,
                 uint64_t max_frame);

/*
 * Scan buf[0:len), which starts at the first unconsumed byte.  Reports the
 * complete lines as one region buf[start:end) holding `frames` lines, each
 * followed by the delimiter; bytes before `start` belong to a discarded line.
 * On TE_TOO_LONG the lines before the bad one are reported; in discard mode
 * the framer then drops the bad line through its delimiter on later scans,
 * otherwise the framer must not be used again.
 */
int te_line_scan(te_line_framer *f, const uint8_t *buf, size_t len,
                 te_result *result);

/* cffi:end */

#endif /* TRIOECHO_FRAMER_H */
