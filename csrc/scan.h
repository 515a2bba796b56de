/*
 * Scanning primitives shared by the framer (framer.c) and the echo session
 * (echo.c).  Internal to csrc/: not part of either unit's cffi interface.
 * Each one looks at the bytes it is given and nothing else.
 */
#ifndef TRIOECHO_SCAN_H
#define TRIOECHO_SCAN_H

#include "framer.h"

/* The n-byte unsigned length header at p (n: 1, 2, 4 or 8). */
uint64_t te_read_header(const uint8_t *p, unsigned n, int little_endian);

/* Write v as an n-byte header at p; v must fit in n bytes. */
void te_write_header(uint8_t *p, uint64_t v, unsigned n, int little_endian);

/* First delimiter that starts at or after pos and ends within len, or len. */
size_t te_find_delimiter(const te_line_framer *f, const uint8_t *buf, size_t len,
                         size_t pos);

/* The same over every delimiter of f: the first position where one is
 * complete and no earlier-listed one may still be arriving, or len.  Sets
 * *dlen to the length of the delimiter found. */
size_t te_find_any_delimiter(const te_line_framer *f, const uint8_t *buf, size_t len,
                             size_t pos, size_t *dlen);

/* Payload length of buf[line_start:end) once a '\r' before `end` is stripped. */
size_t te_payload_length(const te_line_framer *f, const uint8_t *buf,
                         size_t line_start, size_t end);

/*
 * buf[line_start:len) is an unfinished line.  Sets *next_search to the first
 * position a delimiter still to arrive may start at (only the last
 * longest - 1 bytes can begin one) and returns the least payload
 * length the line can still have.
 */
uint64_t te_unfinished_line(const te_line_framer *f, const uint8_t *buf, size_t len,
                            size_t line_start, size_t *next_search);

#endif /* TRIOECHO_SCAN_H */
