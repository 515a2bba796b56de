/* trioecho echo session: see echo.h for the contract. */
#include "echo.h"

#include <string.h>

#include "scan.h"

/* next_frame's outcome when it found a frame to answer. */
#define FOUND (-100)

int te_echo_init(te_echo *e, int framing, unsigned header_bytes, int little_endian,
                 const uint8_t *delimiter, size_t delimiter_len, int strip_cr,
                 int discard, uint64_t max_frame, const uint8_t *suffix,
                 size_t suffix_len, const uint8_t *stop, size_t stop_len)
{
    memset(e, 0, sizeof *e);
    if (suffix_len > TE_ECHO_MAX_AFFIX || stop_len > TE_ECHO_MAX_AFFIX)
        return TE_ECHO_BAD_CONFIG;
    switch (framing) {
    case TE_ECHO_LEN: {
        uint64_t header_max;
        if (te_length_init(&e->length, header_bytes, little_endian, max_frame) != TE_OK)
            return TE_ECHO_BAD_CONFIG;
        header_max = header_bytes == 8 ? UINT64_MAX : ((uint64_t)1 << (8 * header_bytes)) - 1;
        if (max_frame > header_max - suffix_len)
            return TE_ECHO_BAD_CONFIG; /* the largest reply would not fit the header */
        break;
    }
    case TE_ECHO_LINE:
        if (te_line_init(&e->line, delimiter, delimiter_len, strip_cr, discard, max_frame) !=
            TE_OK)
            return TE_ECHO_BAD_CONFIG;
        /* With a one-byte delimiter absent from the suffix, only a payload
         * ending in '\r' (strip_cr) can make a reply that is not one line. */
        e->suffix_safe = delimiter_len == 1 &&
                         (suffix_len == 0 || memchr(suffix, delimiter[0], suffix_len) == NULL);
        break;
    case TE_ECHO_RAW:
        break;
    default:
        return TE_ECHO_BAD_CONFIG;
    }
    e->framing = framing;
    if (suffix_len > 0)
        memcpy(e->suffix, suffix, suffix_len);
    e->suffix_len = suffix_len;
    if (stop_len > 0)
        memcpy(e->stop, stop, stop_len);
    e->stop_len = stop_len;
    return TE_ECHO_NEED;
}

static int is_stop(const te_echo *e, const uint8_t *payload, size_t length)
{
    return length == e->stop_len && memcmp(payload, e->stop, length) == 0;
}

/* Start answering the frame buf[0:frame_len) whose payload is at payload_off. */
static int found(te_echo *e, size_t frame_len, size_t payload_off, size_t payload_len)
{
    e->replying = 1;
    e->frame_len = frame_len;
    e->payload_off = payload_off;
    e->payload_len = payload_len;
    e->reply_done = 0;
    if (e->framing == TE_ECHO_LEN)
        te_write_header(e->header, (uint64_t)payload_len + e->suffix_len,
                        e->length.header_bytes, e->length.little_endian);
    return FOUND;
}

/* The stop message: consumed, not answered, and the session is over. */
static int stopped(te_echo *e, size_t *pos, size_t end, te_echo_result *r)
{
    *pos = end;
    r->received++;
    e->over = 1;
    return TE_ECHO_STOP;
}

static int next_length_frame(te_echo *e, const uint8_t *buf, size_t len, size_t *pos,
                             te_echo_result *r)
{
    const size_t h = e->length.header_bytes;
    uint64_t length;
    size_t start;

    if (len - *pos < h)
        return TE_ECHO_NEED;
    length = te_read_header(buf + *pos, (unsigned)h, e->length.little_endian);
    if (length > e->length.max_frame) {
        /* Checked before waiting for the body: never trust the peer. */
        r->length = length;
        e->over = 1;
        return TE_ECHO_TOO_LONG;
    }
    start = *pos + h;
    if (length > (uint64_t)(len - start))
        return TE_ECHO_NEED; /* body incomplete */
    if (is_stop(e, buf + start, (size_t)length))
        return stopped(e, pos, start + (size_t)length, r);
    return found(e, h + (size_t)length, h, (size_t)length);
}

/* Why payload + suffix + delimiter is not one line to the peer: 0 if it
 * is, TE_ECHO_REPLY_DELIMITER if a delimiter comes before the final one,
 * TE_ECHO_REPLY_CR if it ends in a '\r' that the peer would strip.  The
 * payload holds no delimiter, so only its last delimiter_len - 1 bytes can
 * start one: the window checked is constant-size. */
static int line_reply_fault(const te_echo *e, const uint8_t *payload, size_t payload_len)
{
    const te_line_framer *f = &e->line;
    const size_t dlen = f->delimiter_len;
    uint8_t window[TE_MAX_DELIMITER - 1 + TE_ECHO_MAX_AFFIX + TE_MAX_DELIMITER];
    size_t tail, n, i;

    if (f->strip_cr) {
        if (e->suffix_len > 0 ? e->suffix[e->suffix_len - 1] == '\r'
                              : payload_len > 0 && payload[payload_len - 1] == '\r')
            return TE_ECHO_REPLY_CR;
    }
    if (e->suffix_safe)
        return 0;
    tail = payload_len < dlen - 1 ? payload_len : dlen - 1;
    memcpy(window, payload + payload_len - tail, tail);
    if (e->suffix_len > 0)
        memcpy(window + tail, e->suffix, e->suffix_len);
    memcpy(window + tail + e->suffix_len, f->delimiter, dlen);
    n = tail + e->suffix_len + dlen;
    for (i = 0; i + dlen < n; i++) {
        if (memcmp(window + i, f->delimiter, dlen) == 0)
            return TE_ECHO_REPLY_DELIMITER;
    }
    return 0;
}

static int next_line(te_echo *e, const uint8_t *buf, size_t len, size_t *pos,
                     te_echo_result *r)
{
    te_line_framer *f = &e->line;
    const size_t dlen = f->delimiter_len;
    size_t line_start = *pos, search = *pos + f->search_from, next_search, d, payload;
    uint64_t min_payload;
    int fault;

    f->search_from = 0;
    if (search > len)
        search = len;
    for (;;) {
        d = te_find_delimiter(f, buf, len, search);
        if (!f->discarding)
            break;
        if (d == len) {
            /* Still inside the line being dropped: drop what cannot start
             * its delimiter. */
            (void)te_unfinished_line(f, buf, len, line_start, &next_search);
            *pos = next_search;
            return TE_ECHO_NEED;
        }
        f->discarding = 0;
        line_start = search = *pos = d + dlen;
    }
    if (d == len) {
        min_payload = te_unfinished_line(f, buf, len, line_start, &next_search);
        if (min_payload > f->max_frame) {
            r->length = min_payload;
            if (f->discard) {
                f->discarding = 1;
                *pos = next_search;
                return TE_ECHO_DROPPED;
            }
            e->over = 1;
            return TE_ECHO_TOO_LONG;
        }
        f->search_from = next_search - line_start;
        return TE_ECHO_NEED;
    }
    payload = te_payload_length(f, buf, line_start, d);
    if ((uint64_t)payload > f->max_frame) {
        r->length = payload;
        if (f->discard) {
            *pos = d + dlen;
            return TE_ECHO_DROPPED;
        }
        e->over = 1;
        return TE_ECHO_TOO_LONG;
    }
    if (is_stop(e, buf + line_start, payload))
        return stopped(e, pos, d + dlen, r);
    fault = line_reply_fault(e, buf + line_start, payload);
    if (fault != 0) {
        r->length = (uint64_t)fault;
        e->over = 1;
        return TE_ECHO_BAD_REPLY;
    }
    return found(e, d + dlen - line_start, 0, payload);
}

static int next_raw(te_echo *e, const uint8_t *buf, size_t len, size_t *pos,
                    te_echo_result *r)
{
    if (*pos == len)
        return TE_ECHO_NEED; /* the buffer's one message is answered */
    if (is_stop(e, buf + *pos, len - *pos))
        return stopped(e, pos, len, r);
    return found(e, len - *pos, 0, len - *pos);
}

static int next_frame(te_echo *e, const uint8_t *buf, size_t len, size_t *pos,
                      te_echo_result *r)
{
    switch (e->framing) {
    case TE_ECHO_LEN:
        return next_length_frame(e, buf, len, pos, r);
    case TE_ECHO_LINE:
        return next_line(e, buf, len, pos, r);
    default:
        return next_raw(e, buf, len, pos, r);
    }
}

/* Write as much of the reply to the frame at `frame` as out has room for;
 * return 1 once the whole reply is written. */
static int write_reply(te_echo *e, const uint8_t *frame, uint8_t *out, size_t out_cap,
                       te_echo_result *r)
{
    struct {
        const uint8_t *p;
        size_t n;
    } parts[3];
    size_t nparts = 0, skip = e->reply_done, total = 0, i;

    if (e->framing == TE_ECHO_LEN) {
        parts[nparts].p = e->header;
        parts[nparts++].n = e->length.header_bytes;
    }
    parts[nparts].p = frame + e->payload_off;
    parts[nparts++].n = e->payload_len;
    parts[nparts].p = e->suffix;
    parts[nparts++].n = e->suffix_len;
    if (e->framing == TE_ECHO_LINE) {
        parts[nparts].p = e->line.delimiter;
        parts[nparts++].n = e->line.delimiter_len;
    }
    for (i = 0; i < nparts; i++)
        total += parts[i].n;
    if (skip == 0 && total <= out_cap - r->produced) {
        /* The common case: the whole reply fits. */
        for (i = 0; i < nparts; i++) {
            memcpy(out + r->produced, parts[i].p, parts[i].n);
            r->produced += parts[i].n;
        }
        return 1;
    }
    for (i = 0; i < nparts && r->produced < out_cap; i++) {
        size_t n;
        if (skip >= parts[i].n) {
            skip -= parts[i].n;
            continue;
        }
        n = parts[i].n - skip;
        if (n > out_cap - r->produced)
            n = out_cap - r->produced;
        memcpy(out + r->produced, parts[i].p + skip, n);
        r->produced += n;
        e->reply_done += n;
        skip = 0;
    }
    return e->reply_done == total;
}

int te_echo_feed(te_echo *e, const uint8_t *buf, size_t len, uint8_t *out,
                 size_t out_cap, te_echo_result *r)
{
    size_t pos = 0;
    int status;

    memset(r, 0, sizeof *r);
    if (e->over)
        return r->status = TE_ECHO_BROKEN;
    if (out_cap == 0 || (e->replying && len < e->frame_len))
        return r->status = TE_ECHO_BAD_CONFIG; /* no room, or the frame was dropped */
    for (;;) {
        if (!e->replying) {
            status = next_frame(e, buf, len, &pos, r);
            if (status != FOUND)
                break;
        }
        if (r->produced == out_cap || !write_reply(e, buf + pos, out, out_cap, r)) {
            status = TE_ECHO_MORE; /* out is full, and produced > 0 */
            break;
        }
        e->replying = 0;
        pos += e->frame_len;
        r->replies++;
        r->received++;
    }
    r->consumed = pos;
    return r->status = status;
}
