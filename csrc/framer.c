/* trioecho framer: see framer.h for the contract. */
#define _GNU_SOURCE /* memrchr */
#include "framer.h"
#include "scan.h"

#include <string.h>

_Static_assert(sizeof(((te_line_framer *)0)->delimiter) == TE_MAX_DELIMITER,
               "delimiter array must hold TE_MAX_DELIMITER bytes");

/* Lines shorter than this on average are cheaper to cut with bytes.split
 * than with a struct format; longer ones are cheaper to copy with memcpy. */
#define TE_SHORT_LINE 64

/* ---- struct format writer ------------------------------------------- */

typedef struct {
    char *out;
    size_t room;
    size_t prev_end; /* buf offset the format has reached */
    int ok;          /* 0 once the format ran out of room */
    size_t last_skip, last_length, last_len; /* the previous entry */
} fmt_writer;

static void fmt_init(fmt_writer *w, char *fmt, size_t cap, size_t offset)
{
    w->out = fmt;
    w->room = fmt != NULL ? cap : 0;
    w->prev_end = offset;
    w->last_skip = w->last_length = w->last_len = 0;
    w->ok = w->room >= TE_FORMAT_ENTRY_MAX;
    if (w->ok) {
        *w->out++ = '<'; /* standard sizes, no alignment padding */
        w->room--;
    }
}

static char *put_uint(char *out, uint64_t v)
{
    char digits[20];
    int n = 0;
    if (v < 10) {
        *out++ = (char)('0' + v);
        return out;
    }
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    while (n > 0)
        *out++ = digits[--n];
    return out;
}

/* Append "<skip>x<length>s" for the payload buf[start:start + length).
 * Consecutive frames often have the same gap and length: their entry text
 * is then copied rather than formatted again. */
static int fmt_add(fmt_writer *w, size_t start, size_t length)
{
    char *p = w->out;
    size_t skip = start - w->prev_end;
    if (!w->ok || w->room < TE_FORMAT_ENTRY_MAX) {
        w->ok = 0;
        return 0;
    }
    if (w->last_len != 0 && skip == w->last_skip && length == w->last_length) {
        memcpy(p, p - w->last_len, w->last_len);
        p += w->last_len;
    } else {
        if (skip > 0) {
            p = put_uint(p, skip);
            *p++ = 'x';
        }
        p = put_uint(p, length);
        *p++ = 's';
        w->last_skip = skip;
        w->last_length = length;
        w->last_len = (size_t)(p - w->out);
    }
    w->room -= (size_t)(p - w->out);
    w->out = p;
    w->prev_end = start + length;
    return 1;
}

static size_t fmt_len(const fmt_writer *w, const char *fmt)
{
    return fmt != NULL ? (size_t)(w->out - fmt) : 0;
}

static void result_clear(te_result *r)
{
    memset(r, 0, sizeof *r);
}

/* ---- length-prefixed frames ----------------------------------------- */

int te_frame_init(te_length_framer *f, int field, unsigned header_bytes,
                  int little_endian, size_t length_offset, int64_t length_adjustment,
                  int include_header, uint64_t max_frame)
{
    switch (field) {
    case TE_FIELD_UINT:
        if (header_bytes != 1 && header_bytes != 2 && header_bytes != 3 &&
            header_bytes != 4 && header_bytes != 8)
            return TE_BAD_CONFIG;
        break;
    case TE_FIELD_VARINT:
        if (header_bytes < 1 || header_bytes > TE_MAX_VARINT || length_adjustment != 0)
            return TE_BAD_CONFIG;
        break;
    case TE_FIELD_NONE:
        if (header_bytes != 0 || max_frame == 0 || length_offset != 0 ||
            length_adjustment != 0)
            return TE_BAD_CONFIG;
        break;
    default:
        return TE_BAD_CONFIG;
    }
    if (length_offset > TE_MAX_OFFSET || length_adjustment > TE_MAX_ADJUSTMENT ||
        length_adjustment < -TE_MAX_ADJUSTMENT)
        return TE_BAD_CONFIG;
    f->field = field;
    f->header_bytes = header_bytes;
    f->little_endian = little_endian ? 1 : 0;
    f->length_offset = length_offset;
    f->length_adjustment = length_adjustment;
    f->include_header = include_header ? 1 : 0;
    f->max_frame = max_frame;
    return TE_OK;
}

int te_length_init(te_length_framer *f, unsigned header_bytes,
                   int little_endian, uint64_t max_frame)
{
    if (header_bytes == 3)
        return TE_BAD_CONFIG; /* the echo session writes 1/2/4/8-byte headers */
    return te_frame_init(f, TE_FIELD_UINT, header_bytes, little_endian, 0, 0, 0, max_frame);
}

uint64_t te_read_header(const uint8_t *p, unsigned n, int little_endian)
{
    uint64_t v = 0;
    unsigned i;
    if (n == 4 && !little_endian) /* the default: network order */
        return ((uint64_t)p[0] << 24) | ((uint64_t)p[1] << 16) |
               ((uint64_t)p[2] << 8) | p[3];
    if (little_endian) {
        for (i = n; i > 0; i--)
            v = (v << 8) | p[i - 1];
    } else {
        for (i = 0; i < n; i++)
            v = (v << 8) | p[i];
    }
    return v;
}

void te_write_header(uint8_t *p, uint64_t v, unsigned n, int little_endian)
{
    unsigned i;
    for (i = 0; i < n; i++) {
        unsigned shift = little_endian ? 8 * i : 8 * (n - 1 - i);
        p[i] = (uint8_t)(v >> shift);
    }
}

/*
 * Read the header of the frame at buf[pos:len).  Returns TE_OK with the
 * payload's bounds, TE_MORE when the header is incomplete, or an error
 * status (result's length and field_len say why).  Every value is checked
 * as soon as its header is complete.
 */
static int read_frame_header(const te_length_framer *f, const uint8_t *buf, size_t len,
                             size_t pos, size_t *payload_start, uint64_t *payload_len,
                             te_result *r)
{
    const size_t field_at = pos + f->length_offset;
    uint64_t value = 0, payload;
    size_t n;

    if (f->field == TE_FIELD_NONE) {
        *payload_start = pos;
        *payload_len = f->max_frame;
        return TE_OK;
    }
    if (len - pos < f->length_offset)
        return TE_MORE;
    if (f->field == TE_FIELD_UINT) {
        n = f->header_bytes;
        if (len - field_at < n)
            return TE_MORE;
        value = te_read_header(buf + field_at, (unsigned)n, f->little_endian);
        if (f->length_adjustment < 0) {
            const uint64_t minus = (uint64_t)(-f->length_adjustment);
            if (value < minus) {
                r->length = value;
                return TE_NEGATIVE_LENGTH;
            }
            payload = value - minus;
        } else {
            const uint64_t plus = (uint64_t)f->length_adjustment;
            if (plus > f->max_frame || value > f->max_frame - plus) {
                r->length = value; /* checked before any of the body is awaited */
                return TE_TOO_LONG;
            }
            payload = value + plus;
        }
        if (payload > f->max_frame) {
            r->length = value;
            return TE_TOO_LONG;
        }
    } else { /* TE_FIELD_VARINT: 7 bits a byte, least significant first */
        uint8_t byte = 0;
        for (n = 0;; n++) {
            if (n == f->header_bytes) {
                r->length = value; /* every byte allowed says "more" */
                r->field_len = n;
                return TE_BAD_VARINT;
            }
            if (field_at + n >= len)
                return TE_MORE;
            byte = buf[field_at + n];
            if (n == TE_MAX_VARINT - 1 && (byte & 0x7f) > 1) {
                r->length = value; /* over 64 bits */
                r->field_len = n + 1;
                return TE_BAD_VARINT;
            }
            value |= (uint64_t)(byte & 0x7f) << (7 * n);
            if (!(byte & 0x80))
                break;
        }
        n++;
        if (n > 1 && byte == 0) {
            r->length = value;
            r->field_len = n;
            return TE_VARINT_NOT_MINIMAL;
        }
        if (value > f->max_frame) {
            r->length = value;
            return TE_TOO_LONG;
        }
        payload = value;
    }
    *payload_start = field_at + n;
    *payload_len = payload;
    return TE_OK;
}

int te_length_scan(const te_length_framer *f, const uint8_t *buf, size_t len,
                   size_t pos, char *fmt, size_t fmt_cap, uint8_t *dest,
                   size_t dest_cap, te_result *r)
{
    int packing = 0;
    fmt_writer w;

    result_clear(r);
    if (pos > len)
        pos = len;
    r->offset = pos;
    for (;;) {
        size_t payload_start, start, length;
        uint64_t payload;
        int status = read_frame_header(f, buf, len, pos, &payload_start, &payload, r);
        if (status == TE_MORE)
            break; /* header incomplete */
        if (status != TE_OK) {
            r->status = status;
            break;
        }
        if (payload > (uint64_t)(len - payload_start))
            break; /* body incomplete */
        start = f->include_header ? pos : payload_start;
        length = payload_start + (size_t)payload - start;
        if (r->frames == 0) {
            r->start = start;
            r->end = start + length;
            packing = dest != NULL && length <= TE_PACK_MAX && length <= dest_cap;
            fmt_init(&w, fmt, fmt_cap, packing ? 0 : pos);
        }
        if (packing) {
            if (length > dest_cap - r->packed || !fmt_add(&w, r->packed, length)) {
                r->status = TE_MORE; /* no room for this frame */
                break;
            }
            memcpy(dest + r->packed, buf + start, length);
            r->packed += length;
        } else if (!fmt_add(&w, start, length) && r->frames > 0) {
            r->status = TE_MORE; /* no room to describe this frame */
            break;
        }
        r->frames++;
        pos = start + length;
    }
    if (r->frames == 0)
        r->layout = TE_LAYOUT_NONE;
    else if (r->frames == 1)
        r->layout = TE_LAYOUT_ONE;
    else
        r->layout = packing ? TE_LAYOUT_PACKED : TE_LAYOUT_FORMAT;
    r->fmt_len = r->frames > 1 ? fmt_len(&w, fmt) : 0;
    r->consumed = pos;
    return r->status;
}

int te_length_forward(const te_length_framer *f, const uint8_t *buf, size_t len,
                      uint64_t *due, te_result *r)
{
    size_t pos = 0;

    result_clear(r);
    if (*due > 0) {
        if (*due > (uint64_t)len) { /* the whole of buf is owed */
            *due -= len;
            r->consumed = len;
            return TE_OK;
        }
        pos = (size_t)*due;
        *due = 0;
        r->frames = 1;
    }
    for (;;) {
        size_t payload_start;
        uint64_t payload;
        int status;
        if (pos == len)
            break; /* no frame begun: fixed frames have no header to wait for */
        status = read_frame_header(f, buf, len, pos, &payload_start, &payload, r);
        if (status == TE_MORE)
            break; /* an incomplete header: kept by the caller */
        if (status != TE_OK) {
            r->status = status;
            break;
        }
        if (payload > (uint64_t)(len - payload_start)) {
            *due = payload - (uint64_t)(len - payload_start);
            pos = len; /* the body so far goes on; the rest follows */
            break;
        }
        pos = payload_start + (size_t)payload;
        r->frames++;
    }
    r->consumed = pos;
    return r->status;
}

/* ---- delimited lines ------------------------------------------------- */

int te_line_init(te_line_framer *f, const uint8_t *delimiter,
                 size_t delimiter_len, int strip_cr, int discard,
                 uint64_t max_frame)
{
    if (delimiter_len < 1 || delimiter_len > TE_MAX_DELIMITER)
        return TE_BAD_CONFIG;
    memset(f, 0, sizeof *f);
    memcpy(f->delimiter, delimiter, delimiter_len);
    f->delimiter_len = delimiter_len;
    f->delimiter_count = 1;
    f->longest = delimiter_len;
    f->strip_cr = strip_cr ? 1 : 0;
    f->discard = discard ? 1 : 0;
    f->max_frame = max_frame;
    return TE_OK;
}

static void mark_start(te_more_delimiters *more, uint8_t first)
{
    more->starts[first >> 3] |= (uint8_t)(1u << (first & 7));
}

int te_line_add_delimiter(te_line_framer *f, te_more_delimiters *more,
                          const uint8_t *delimiter, size_t delimiter_len)
{
    size_t i = f->delimiter_count - 1;
    if (delimiter_len < 1 || delimiter_len > TE_MAX_DELIMITER ||
        f->delimiter_count >= TE_MAX_DELIMITERS || more == NULL ||
        (f->more != NULL && f->more != more))
        return TE_BAD_CONFIG;
    if (f->more == NULL) {
        memset(more, 0, sizeof *more);
        mark_start(more, f->delimiter[0]);
        f->more = more;
    }
    memcpy(more->bytes[i], delimiter, delimiter_len);
    more->len[i] = delimiter_len;
    mark_start(more, delimiter[0]);
    f->delimiter_count++;
    if (delimiter_len > f->longest)
        f->longest = delimiter_len;
    return TE_OK;
}

/* Delimiter i (0: the first) and its length. */
static const uint8_t *delimiter_at(const te_line_framer *f, size_t i, size_t *n)
{
    if (i == 0) {
        *n = f->delimiter_len;
        return f->delimiter;
    }
    *n = f->more->len[i - 1];
    return f->more->bytes[i - 1];
}

/* Some delimiter starts at buf[p]: 2 if one is complete there and no
 * earlier-listed one may still be completing (its length in *dlen), 1 if
 * one may still be completing (only in the last longest - 1 bytes), else 0. */
static int delimiter_starts(const te_line_framer *f, const uint8_t *buf, size_t len,
                            size_t p, size_t *dlen)
{
    size_t i;
    for (i = 0; i < f->delimiter_count; i++) {
        size_t n;
        const uint8_t *d = delimiter_at(f, i, &n);
        if (len - p >= n) {
            if (memcmp(buf + p, d, n) == 0) {
                *dlen = n;
                return 2;
            }
        } else if (memcmp(buf + p, d, len - p) == 0) {
            return 1; /* an earlier-listed one decides first */
        }
    }
    return 0;
}

size_t te_find_any_delimiter(const te_line_framer *f, const uint8_t *buf, size_t len,
                             size_t pos, size_t *dlen)
{
    if (f->delimiter_count == 1) {
        *dlen = f->delimiter_len;
        return te_find_delimiter(f, buf, len, pos);
    }
    for (; pos < len; pos++) {
        const uint8_t b = buf[pos];
        int found;
        if (!(f->more->starts[b >> 3] & (1u << (b & 7))))
            continue;
        found = delimiter_starts(f, buf, len, pos, dlen);
        if (found == 2)
            return pos;
        if (found == 1)
            return len; /* wait: the line may end here */
    }
    return len;
}

size_t te_find_delimiter(const te_line_framer *f, const uint8_t *buf,
                             size_t len, size_t pos)
{
    const size_t dlen = f->delimiter_len;
    const uint8_t first = f->delimiter[0];

    while (pos < len && len - pos >= dlen) {
        const uint8_t *hit = memchr(buf + pos, first, len - pos - dlen + 1);
        if (hit == NULL)
            return len;
        pos = (size_t)(hit - buf);
        if (dlen == 1 || memcmp(hit + 1, f->delimiter + 1, dlen - 1) == 0)
            return pos;
        pos++;
    }
    return len;
}

size_t te_payload_length(const te_line_framer *f, const uint8_t *buf,
                             size_t line_start, size_t end)
{
    size_t n = end - line_start;
    if (f->strip_cr && n > 0 && buf[end - 1] == '\r')
        n--;
    return n;
}

uint64_t te_unfinished_line(const te_line_framer *f, const uint8_t *buf, size_t len,
                            size_t line_start, size_t *next_search)
{
    const size_t dlen = f->longest;
    size_t q, end = len;
    *next_search = len - line_start >= dlen ? len - dlen + 1 : line_start;
    /* The line can end no earlier than the first position whose remaining
     * bytes are a prefix of a delimiter (or hold one). */
    for (q = *next_search; q < len && end == len; q++) {
        size_t i;
        for (i = 0; i < f->delimiter_count; i++) {
            size_t n;
            const uint8_t *d = delimiter_at(f, i, &n);
            if (memcmp(buf + q, d, len - q < n ? len - q : n) == 0) {
                end = q;
                break;
            }
        }
    }
    return te_payload_length(f, buf, line_start, end);
}

typedef struct {
    size_t region_start; /* first byte of the first reported line */
    size_t line_start;   /* first byte of the line being scanned */
    size_t frames;
    size_t cr_lines;     /* reported lines that had a '\r' stripped */
    size_t first_len;    /* payload length of the first reported line */
    int counted;         /* frames and cr_lines are exact */
} line_scan;

/* Fill in how the reported lines are laid out for the caller. */
static void line_layout(const te_line_framer *f, const line_scan *s,
                        const fmt_writer *w, const char *fmt, te_result *r)
{
    r->frames = s->frames;
    r->start = s->region_start;
    r->end = s->line_start;
    if (s->frames == 0) {
        r->layout = TE_LAYOUT_NONE;
        r->start = r->end = 0;
    } else if (s->frames == 1 && s->counted) {
        r->layout = TE_LAYOUT_ONE;
        r->end = r->start + s->first_len;
    } else if (f->delimiter_count > 1) {
        r->layout = TE_LAYOUT_FORMAT; /* split cannot cut at several delimiters */
        r->offset = s->region_start;
        r->fmt_len = fmt_len(w, fmt);
    } else if (s->counted && w->ok &&
               (s->line_start - s->region_start >= TE_SHORT_LINE * s->frames ||
                (s->cr_lines != 0 && s->cr_lines != s->frames))) {
        r->layout = TE_LAYOUT_FORMAT;
        r->offset = s->region_start;
        r->fmt_len = fmt_len(w, fmt);
    } else if (s->cr_lines == 0) {
        r->layout = TE_LAYOUT_SPLIT;
    } else {
        r->layout = s->cr_lines == s->frames ? TE_LAYOUT_SPLIT_CR
                                             : TE_LAYOUT_SPLIT_MIXED;
    }
}

/*
 * Fast path for the common case (one-byte delimiter, no '\r' to strip,
 * short lines): when everything up to the last delimiter is within the
 * limit, no line in it can be over-long, so the lines need not be visited
 * one by one here; bytes.split cuts them.  Returns 1 if it applied.
 */
static int line_fast_path(const te_line_framer *f, const uint8_t *buf,
                          size_t len, size_t pos, line_scan *s)
{
    const uint8_t *first, *last;
    if (f->delimiter_count != 1 || f->delimiter_len != 1 || f->discarding || pos >= len)
        return 0;
    first = memchr(buf + pos, f->delimiter[0], len - pos);
    if (first == NULL || (size_t)(first - buf) >= TE_SHORT_LINE)
        return 0;
    last = memrchr(first, f->delimiter[0], len - (size_t)(first - buf));
    if ((uint64_t)(last - buf) > f->max_frame)
        return 0;
    /* strip_cr: lines without a '\r' have nothing to strip. */
    if (f->strip_cr && memchr(buf, '\r', (size_t)(last - buf)) != NULL)
        return 0;
    if (last == first) {
        s->frames = 1;
        s->first_len = (size_t)(first - buf);
    } else {
        s->frames = 2; /* a lower bound: the lines are not counted */
        s->counted = 0;
    }
    s->line_start = (size_t)(last - buf) + 1;
    return 1;
}

int te_line_scan(te_line_framer *f, const uint8_t *buf, size_t len,
                 char *fmt, size_t fmt_cap, te_result *r)
{
    size_t next_search, pos = f->search_from;
    uint64_t min_payload;
    line_scan s = {0, 0, 0, 0, 0, 1};
    fmt_writer w;

    result_clear(r);
    if (pos > len)
        pos = len;
    if (line_fast_path(f, buf, len, pos, &s)) {
        w.ok = 0;
        goto unfinished;
    }
    fmt_init(&w, fmt, fmt_cap, 0);
    for (;;) {
        size_t dlen;
        size_t d = te_find_any_delimiter(f, buf, len, pos, &dlen);
        size_t payload;
        if (d == len)
            break;
        if (f->discarding) {
            /* The rest of an over-long line: drop it with its delimiter. */
            f->discarding = 0;
            s.line_start = s.region_start = pos = d + dlen;
            w.prev_end = s.region_start;
            continue;
        }
        payload = te_payload_length(f, buf, s.line_start, d);
        if ((uint64_t)payload > f->max_frame) {
            line_layout(f, &s, &w, fmt, r);
            r->status = TE_TOO_LONG;
            r->length = payload;
            /* discard: drop the bad line now, rescan the rest next time */
            r->consumed = f->discard ? d + dlen : s.line_start;
            f->search_from = 0;
            return r->status;
        }
        if (s.frames == 0) {
            s.first_len = payload;
            /* Short lines will go to bytes.split: skip the format. */
            if (payload < TE_SHORT_LINE && !f->strip_cr && f->delimiter_count == 1)
                w.ok = 0;
        }
        if (!fmt_add(&w, s.line_start, payload) && f->delimiter_count > 1 &&
            s.frames > 0) {
            /* Several delimiters: no split fallback, report what fits. */
            line_layout(f, &s, &w, fmt, r);
            r->status = TE_MORE;
            r->consumed = s.line_start;
            f->search_from = 0;
            return r->status;
        }
        s.frames++;
        if (payload != d - s.line_start)
            s.cr_lines++;
        s.line_start = pos = d + dlen;
    }

unfinished:
    min_payload = te_unfinished_line(f, buf, len, s.line_start, &next_search);
    line_layout(f, &s, &w, fmt, r);
    if (f->discarding) {
        r->consumed = next_search;
        f->search_from = 0;
        return r->status;
    }
    if (min_payload > f->max_frame) {
        r->status = TE_TOO_LONG;
        r->length = min_payload;
        if (f->discard) {
            f->discarding = 1;
            r->consumed = next_search;
            f->search_from = 0;
        } else {
            r->consumed = s.line_start;
        }
        return r->status;
    }
    r->consumed = s.line_start;
    f->search_from = next_search - s.line_start;
    return r->status;
}
