/* trioecho framer: see framer.h for the contract. */
#include "framer.h"

#include <string.h>

_Static_assert(sizeof(((te_line_framer *)0)->delimiter) == TE_MAX_DELIMITER,
               "delimiter array must hold TE_MAX_DELIMITER bytes");

static void result_clear(te_result *r)
{
    memset(r, 0, sizeof *r);
}

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

static uint64_t read_header(const uint8_t *p, unsigned n, int little_endian)
{
    uint64_t v = 0;
    unsigned i;
    if (little_endian) {
        for (i = n; i > 0; i--)
            v = (v << 8) | p[i - 1];
    } else {
        for (i = 0; i < n; i++)
            v = (v << 8) | p[i];
    }
    return v;
}

int te_length_scan(const te_length_framer *f, const uint8_t *buf, size_t len,
                   size_t pos, size_t *starts, size_t *ends, size_t cap,
                   te_result *r)
{
    const size_t h = f->header_bytes;
    size_t n = 0;

    result_clear(r);
    if (pos > len)
        pos = len;
    while (n < cap && len - pos >= h) {
        uint64_t length = read_header(buf + pos, (unsigned)h, f->little_endian);
        if (length > f->max_frame) {
            /* Checked before waiting for the body: never trust the peer. */
            r->status = TE_TOO_LONG;
            r->length = length;
            break;
        }
        if (length > (uint64_t)(len - pos - h))
            break; /* body incomplete */
        starts[n] = pos + h;
        ends[n] = pos + h + (size_t)length;
        pos = ends[n];
        n++;
    }
    if (r->status == TE_OK && n == cap && cap > 0)
        r->status = TE_MORE;
    r->frames = n;
    r->start = 0;
    r->end = pos;
    r->consumed = pos;
    return r->status;
}

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

/* First delimiter that starts at or after pos and ends within len, or len. */
static size_t find_delimiter(const te_line_framer *f, const uint8_t *buf,
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

/* Payload length of buf[line_start:end) once a '\r' before `end` is stripped. */
static uint64_t payload_length(const te_line_framer *f, const uint8_t *buf,
                               size_t line_start, size_t end)
{
    size_t n = end - line_start;
    if (f->strip_cr && n > 0 && buf[end - 1] == '\r')
        n--;
    return n;
}

int te_line_scan(te_line_framer *f, const uint8_t *buf, size_t len,
                 te_result *r)
{
    const size_t dlen = f->delimiter_len;
    size_t line_start = 0, region_start = 0, next_search, p, q;
    size_t pos = f->search_from;
    uint64_t min_payload;

    result_clear(r);
    if (pos > len)
        pos = len;
    for (;;) {
        size_t d = find_delimiter(f, buf, len, pos);
        uint64_t payload;
        if (d == len)
            break;
        if (f->discarding) {
            /* The rest of an over-long line: drop it with its delimiter. */
            f->discarding = 0;
            line_start = region_start = pos = d + dlen;
            continue;
        }
        payload = payload_length(f, buf, line_start, d);
        if (payload > f->max_frame) {
            r->status = TE_TOO_LONG;
            r->length = payload;
            r->start = region_start;
            r->end = line_start;
            /* discard: drop the bad line now, rescan the rest next time */
            r->consumed = f->discard ? d + dlen : line_start;
            f->search_from = 0;
            return r->status;
        }
        r->frames++;
        if (payload != d - line_start)
            r->cr_lines++;
        line_start = pos = d + dlen;
    }

    /* buf[line_start:len) is an unfinished line.  Only its last dlen - 1
     * bytes can begin a delimiter that is still to arrive. */
    next_search = len - line_start >= dlen ? len - dlen + 1 : line_start;
    r->start = region_start;
    r->end = line_start;
    if (f->discarding) {
        r->start = r->end = r->consumed = next_search;
        f->search_from = 0;
        return r->status;
    }
    /* The line can end no earlier than the first position whose remaining
     * bytes are a prefix of the delimiter. */
    p = len;
    for (q = next_search; q < len; q++) {
        if (memcmp(buf + q, f->delimiter, len - q) == 0) {
            p = q;
            break;
        }
    }
    min_payload = payload_length(f, buf, line_start, p);
    if (min_payload > f->max_frame) {
        r->status = TE_TOO_LONG;
        r->length = min_payload;
        if (f->discard) {
            f->discarding = 1;
            r->consumed = next_search;
            f->search_from = 0;
        } else {
            r->consumed = line_start;
        }
        return r->status;
    }
    r->consumed = line_start;
    f->search_from = next_search - line_start;
    return r->status;
}
