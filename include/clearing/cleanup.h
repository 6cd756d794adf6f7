/* Scope-owned resources: a variable declared with one of these is released on every return path.
 * steal_pointer() hands ownership on (the variable is left NULL). */
#ifndef CLEARING_CLEANUP_H
#define CLEARING_CLEANUP_H

#include <stdlib.h>
#include <unistd.h>

static inline void clr_freep(void *p)
{
    free(*(void **)p);
}

static inline void clr_closep(int *fd)
{
    if (*fd >= 0)
        close(*fd);
}

#define _cleanup_free_ __attribute__((cleanup(clr_freep)))
#define _cleanup_close_ __attribute__((cleanup(clr_closep)))

#define steal_pointer(pp)                                                                         \
    __extension__({                                                                               \
        __typeof__(*(pp)) _tmp = *(pp);                                                           \
        *(pp) = NULL;                                                                             \
        _tmp;                                                                                     \
    })

#define steal_fd(fdp)                                                                             \
    __extension__({                                                                               \
        int _fd = *(fdp);                                                                         \
        *(fdp) = -1;                                                                              \
        _fd;                                                                                      \
    })

#endif
