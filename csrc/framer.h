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
#define TE_MAX_DELIMITERS 8  /* delimiters one line framer may have */
#define TE_MAX_VARINT 10     /* bytes of a LEB128 varint holding 64 bits */
#define TE_MAX_OFFSET 65535  /* largest length_offset */
#define TE_MAX_ADJUSTMENT 2147483647 /* largest |length_adjustment| */

/* How a length-family framer finds each frame's length (te_length_framer.field). */
#define TE_FIELD_UINT 0    /* an unsigned 1/2/3/4/8-byte integer */
#define TE_FIELD_VARINT 1  /* an unsigned LEB128 varint (protobuf, MQTT) */
#define TE_FIELD_NONE 2    /* no field: every frame is max_frame bytes */

/* Status codes returned by the scan functions. */
#define TE_OK 0            /* every complete frame was reported */
#define TE_MORE 1          /* output space ran out: scan again */
#define TE_TOO_LONG -1     /* a frame exceeds max_frame: see result.length */
#define TE_BAD_CONFIG -2   /* an init argument is out of range */
#define TE_NEGATIVE_LENGTH -3 /* field + length_adjustment < 0: result.length is the field */
#define TE_BAD_VARINT -4   /* a varint longer than header_bytes or over 64 bits */
#define TE_VARINT_NOT_MINIMAL -5 /* a varint with needless 0x80 bytes: result.length
                                    is its value, result.field_len its bytes */

/* How the reported frames are laid out in buf (result.layout). */
#define TE_LAYOUT_NONE 0   /* no frame reported */
#define TE_LAYOUT_ONE 1    /* one frame: payload is buf[start:end) */
#define TE_LAYOUT_FORMAT 2 /* fmt holds a struct format: unpack_from(buf, offset) */
#define TE_LAYOUT_PACKED 6 /* payloads copied to dest: unpack_from(dest[:packed]) */
#define TE_LAYOUT_SPLIT 3  /* lines: buf[start:end) split at the delimiter */
#define TE_LAYOUT_SPLIT_CR 4    /* same, then drop the last byte ('\r') of every line */
#define TE_LAYOUT_SPLIT_MIXED 5 /* same, then drop a final '\r' where there is one */

/* Room one frame needs in a struct format: "<", two 20-digit numbers, "xs". */
#define TE_FORMAT_ENTRY_MAX 48

typedef struct {
    int status;          /* one of TE_* */
    int layout;          /* one of TE_LAYOUT_* */
    size_t frames;       /* number of complete frames reported by this scan
                            (LAYOUT_SPLIT: a lower bound, lines are not
                            always counted) */
    size_t offset;       /* LAYOUT_FORMAT: where the format starts in buf */
    size_t start;        /* LAYOUT_ONE: the payload; LAYOUT_SPLIT*: the region */
    size_t end;          /*   of lines, each followed by its delimiter */
    size_t fmt_len;      /* LAYOUT_FORMAT, LAYOUT_PACKED: bytes written to fmt */
    size_t packed;       /* LAYOUT_PACKED: bytes written to dest */
    size_t consumed;     /* drop this many bytes from the buffer's front */
    uint64_t length;     /* TE_TOO_LONG: the (minimum) length seen, before the
                            length adjustment; errors: the field's value */
    size_t field_len;    /* TE_BAD_VARINT, TE_VARINT_NOT_MINIMAL: its bytes */
} te_result;

/*
 * A length-family framer: each frame is length_offset bytes (a type byte,
 * say), a length field, then the payload.  The payload's size is the field's
 * value plus length_adjustment (-4 when the field counts itself).  Frames
 * are reported with the bytes before the payload (include_header) or
 * without.  TE_FIELD_NONE frames have no header: each is max_frame bytes.
 */
typedef struct {
    uint64_t max_frame;      /* largest payload accepted, in bytes */
    unsigned header_bytes;   /* UINT: 1, 2, 3, 4 or 8; VARINT: most bytes (1..10) */
    int little_endian;       /* UINT: 0 big endian (network order), 1 little */
    int field;               /* TE_FIELD_* */
    size_t length_offset;    /* bytes before the field, 0..TE_MAX_OFFSET */
    int64_t length_adjustment; /* UINT: added to the field's value */
    int include_header;      /* frames keep the bytes before the payload */
} te_length_framer;

/* The delimiters after a line framer's first, in memory the caller owns
 * (te_line_add_delimiter): a framer with one delimiter stays small. */
typedef struct {
    uint8_t bytes[7][8];     /* delimiters 2..TE_MAX_DELIMITERS */
    size_t len[7];
    uint8_t starts[32];      /* bitmap of every delimiter's first byte */
} te_more_delimiters;

typedef struct {
    uint8_t delimiter[8];     /* TE_MAX_DELIMITER: the first (or only) one */
    size_t delimiter_len;    /* 1..TE_MAX_DELIMITER */
    uint64_t max_frame;      /* largest line accepted, delimiter excluded */
    int strip_cr;            /* drop one '\r' right before the delimiter */
    int discard;             /* over-long line: 0 fail, 1 drop it and go on */
    /* scan state, relative to the caller's buffer */
    size_t search_from;      /* first position a delimiter may start at */
    int discarding;          /* dropping bytes through the next delimiter */
    /* Further delimiters (te_line_add_delimiter): a line ends at the
     * delimiter that starts first, the earlier listed if two start at the
     * same byte. */
    size_t delimiter_count;  /* 1..TE_MAX_DELIMITERS */
    size_t longest;          /* the longest delimiter's length */
    te_more_delimiters *more; /* NULL while there is one delimiter */
} te_line_framer;

/*
 * Frames are reported as one payload's bounds, as line regions for
 * bytes.split, or as a struct module format ("<4x16s4x3s...") whose
 * unpack_from(buf, offset) yields every payload.  The format goes to
 * fmt[0:fmt_cap); each frame needs up to TE_FORMAT_ENTRY_MAX bytes of it.
 * Small length-prefixed payloads are also packed side by side into dest, so
 * that their format is shorter ("<16s16s..."): Python parses it faster.
 */

/* Payloads up to this size are packed into dest when dest is given. */
#define TE_PACK_MAX 128

/* A framer with a bare big- or little-endian length field (TE_FIELD_UINT). */
int te_length_init(te_length_framer *f, unsigned header_bytes,
                   int little_endian, uint64_t max_frame);

/*
 * Any length-family framer (see te_length_framer).  Returns TE_BAD_CONFIG for
 * a field kind, width, offset or adjustment out of range, for a length
 * adjustment on a varint and for TE_FIELD_NONE frames of 0 bytes.
 */
int te_frame_init(te_length_framer *f, int field, unsigned header_bytes,
                  int little_endian, size_t length_offset, int64_t length_adjustment,
                  int include_header, uint64_t max_frame);

/*
 * Scan buf[pos:len), where pos is a frame boundary (0 on a fresh buffer),
 * and report the complete frames that fit in fmt and dest (at least one;
 * dest may be NULL).  Packing is chosen by the first frame's size.  Sets
 * result->consumed to the end of the last one (pos when there is none).
 * Returns result->status: TE_OK, TE_MORE (fmt is full: handle these frames,
 * then call again with pos = result->consumed) or TE_TOO_LONG (frames before
 * the bad header are still reported).
 */
int te_length_scan(const te_length_framer *f, const uint8_t *buf, size_t len,
                   size_t pos, char *fmt, size_t fmt_cap, uint8_t *dest,
                   size_t dest_cap, te_result *result);

/*
 * The forwarding scan, for a relay that passes bytes on as they arrive
 * rather than as frames.  buf[0:len) follows bytes already forwarded, of
 * which the frame in progress still owes *due bytes (0: buf starts at a
 * frame boundary).  Every header that is complete in buf is validated as
 * te_length_scan validates it, and result->consumed is how many bytes may
 * be forwarded now: what the frame in progress still owes, every frame
 * whose header is complete, and as much of the last one's body as buf
 * holds, so a frame's body passes through however long it is and however
 * it is chunked.  The bytes after result->consumed are an incomplete header
 * (fewer than length_offset plus the field's bytes): the caller keeps them
 * and scans them again, first, with the bytes that follow.  *due becomes
 * what the last frame still owes; result->frames counts the frames this
 * scan completed.  Linear in len, keeps nothing but *due.  Returns TE_OK, or
 * a header's error: result->consumed then ends before that header (those
 * bytes may still be forwarded), result->length and result->field_len as
 * te_length_scan sets them.
 */
int te_length_forward(const te_length_framer *f, const uint8_t *buf, size_t len,
                      uint64_t *due, te_result *result);

int te_line_init(te_line_framer *f, const uint8_t *delimiter,
                 size_t delimiter_len, int strip_cr, int discard,
                 uint64_t max_frame);

/* Add one more delimiter (1..TE_MAX_DELIMITER bytes; at most
 * TE_MAX_DELIMITERS in all) before the first scan, kept in `more`: pass the
 * same one every time; it must outlive the framer. */
int te_line_add_delimiter(te_line_framer *f, te_more_delimiters *more,
                          const uint8_t *delimiter, size_t delimiter_len);

/*
 * Scan buf[0:len), which starts at the first unconsumed byte, and report
 * every complete line.  Bytes of buf before the lines belong to a discarded
 * line.  On TE_TOO_LONG the lines before the bad one are reported; in
 * discard mode the framer drops the bad line through its delimiter (on this
 * or later scans), otherwise the framer must not be used again.  Never
 * returns TE_MORE with one delimiter: when fmt is too small the lines are
 * laid out for split.  With several delimiters the lines are always laid out
 * by a format: when fmt is full, TE_MORE reports the lines that fit (at least
 * one); scan again from result.consumed.
 */
int te_line_scan(te_line_framer *f, const uint8_t *buf, size_t len,
                 char *fmt, size_t fmt_cap, te_result *result);

/* cffi:end */

#endif /* TRIOECHO_FRAMER_H */
