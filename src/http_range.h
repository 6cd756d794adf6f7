/* HTTP byte ranges (RFC 9110 14.2): the one range of a "Range: bytes=..." header that a download
 * serves with 206. Only a single range is served; a header this does not serve (another unit,
 * several ranges, not well formed) is ignored, as the RFC lets a server do: the whole file. */
#ifndef CLR_HTTP_RANGE_H
#define CLR_HTTP_RANGE_H

#include <stdint.h>

enum http_range {
    HTTP_RANGE_NONE,          /* no header, or one to ignore: send the whole body (200) */
    HTTP_RANGE_OK,            /* bytes *first..*last (inclusive) of size: 206 */
    HTTP_RANGE_UNSATISFIABLE, /* well formed, but no byte of it is in the body: 416 */
};

/* header: the Range header's value (NULL: none); size: the body's length. "bytes=A-B" (B cut
 * to the last byte), "bytes=A-" (to the end), "bytes=-N" (the last N bytes). */
enum http_range http_range_parse(const char *header, uint64_t size, uint64_t *first,
                                 uint64_t *last);

#endif
