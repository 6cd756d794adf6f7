/* Scope-owned resources: a variable declared with one of these is released on every return path.
 * steal_pointer() hands ownership on (the variable is left NULL). */
#ifndef CLEARING_CLEANUP_H
#define CLEARING_CLEANUP_H

#include <dirent.h>
#include <stdio.h>
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

static inline void clr_fclosep(FILE **f)
{
    if (*f)
        fclose(*f);
}

static inline void clr_closedirp(DIR **d)
{
    if (*d)
        closedir(*d);
}

/* A cleanup function for a type with its own free function: CLR_DEFINE_CLEANUP(json_t *,
 * json_decref) defines json_decrefp(), for use as __attribute__((cleanup(json_decrefp))). Define
 * each one once, in the header of the module that owns the type (cleanup_json.h for jansson). */
#define CLR_DEFINE_CLEANUP(type, func)                                                            \
    static inline void func##p(type *p)                                                           \
    {                                                                                             \
        if (*p)                                                                                   \
            func(*p);                                                                             \
    }

#define _cleanup_free_ __attribute__((cleanup(clr_freep)))
#define _cleanup_close_ __attribute__((cleanup(clr_closep)))
#define _cleanup_fclose_ __attribute__((cleanup(clr_fclosep)))
#define _cleanup_closedir_ __attribute__((cleanup(clr_closedirp)))

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
