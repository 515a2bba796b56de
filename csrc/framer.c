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

int te_length_init(te_length_framer *f, unsigned header_bytes,
                   int little_endian, uint64_t max_frame)
{
    if (header_bytes != 1 && header_bytes != 2 && header_bytes != 4 &&
        header_bytes != 8)
        return TE_BAD_CONFIG;
    f->header_bytes = header_bytes;
    f->little_endian = little_endian ? 1 : 0;
    f->max_frame = max_frame;
    return TE_OK;
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

int te_length_scan(const te_length_framer *f, const uint8_t *buf, size_t len,
                   size_t pos, char *fmt, size_t fmt_cap, uint8_t *dest,
                   size_t dest_cap, te_result *r)
{
    const size_t h = f->header_bytes;
    int packing = 0;
    fmt_writer w;

    result_clear(r);
    if (pos > len)
        pos = len;
    r->offset = pos;
    while (len - pos >= h) {
        uint64_t length = te_read_header(buf + pos, (unsigned)h, f->little_endian);
        size_t start = pos + h;
        if (length > f->max_frame) {
            /* Checked before waiting for the body: never trust the peer. */
            r->status = TE_TOO_LONG;
            r->length = length;
            break;
        }
        if (length > (uint64_t)(len - start))
            break; /* body incomplete */
        if (r->frames == 0) {
            r->start = start;
            r->end = start + (size_t)length;
            packing = dest != NULL && length <= TE_PACK_MAX && length <= dest_cap;
            fmt_init(&w, fmt, fmt_cap, packing ? 0 : pos);
        }
        if (packing) {
            if (length > (uint64_t)(dest_cap - r->packed) ||
                !fmt_add(&w, r->packed, (size_t)length)) {
                r->status = TE_MORE; /* no room for this frame */
                break;
            }
            memcpy(dest + r->packed, buf + start, (size_t)length);
            r->packed += (size_t)length;
        } else if (!fmt_add(&w, start, (size_t)length) && r->frames > 0) {
            r->status = TE_MORE; /* no room to describe this frame */
            break;
        }
        r->frames++;
        pos = start + (size_t)length;
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
    f->strip_cr = strip_cr ? 1 : 0;
    f->discard = discard ? 1 : 0;
    f->max_frame = max_frame;
    return TE_OK;
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
    const size_t dlen = f->delimiter_len;
    size_t q, end = len;
    *next_search = len - line_start >= dlen ? len - dlen + 1 : line_start;
    /* The line can end no earlier than the first position whose remaining
     * bytes are a prefix of the delimiter. */
    for (q = *next_search; q < len; q++) {
        if (memcmp(buf + q, f->delimiter, len - q) == 0) {
            end = q;
            break;
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
    (void)f;
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
    if (f->delimiter_len != 1 || f->discarding || pos >= len)
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
    const size_t dlen = f->delimiter_len;
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
        size_t d = te_find_delimiter(f, buf, len, pos);
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
            if (payload < TE_SHORT_LINE && !f->strip_cr)
                w.ok = 0;
        }
        s.frames++;
        if (payload != d - s.line_start)
            s.cr_lines++;
        fmt_add(&w, s.line_start, payload);
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
