/* code_adopting: the sandboxes whose code session's kernel a fork or restore is about to take
 * over from a snapshot (svc_code_adopt_begin .. svc_code_adopt_end). See code.h. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "code.h"

/* Sandboxes being forked or restored, whose snapshot's kernel is about to be taken over
 * (adopting_lock): a cell there starts no kernel meanwhile (code.c session_ready). Out of
 * memory: no mark, and such a cell's kernel is ended by the adoption, which says so. */
struct adopting {
    char id[CLR_SANDBOX_ID_MAX + 1];
    struct adopting *next;
};
static struct adopting *adopting;
static pthread_mutex_t adopting_lock = PTHREAD_MUTEX_INITIALIZER;

void svc_code_adopt_begin(const char *id)
{
    struct adopting *a = calloc(1, sizeof(*a));
    if (!a)
        return;
    snprintf(a->id, sizeof(a->id), "%s", id);
    pthread_mutex_lock(&adopting_lock);
    a->next = adopting;
    adopting = a;
    pthread_mutex_unlock(&adopting_lock);
}

void svc_code_adopt_end(const char *id)
{
    pthread_mutex_lock(&adopting_lock);
    for (struct adopting **pp = &adopting; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->id, id) == 0) {
            struct adopting *a = *pp;
            *pp = a->next;
            free(a);
            break;
        }
    }
    pthread_mutex_unlock(&adopting_lock);
}

bool svc_code_adopting(const char *id)
{
    pthread_mutex_lock(&adopting_lock);
    const struct adopting *a = adopting;
    while (a && strcmp(a->id, id) != 0)
        a = a->next;
    pthread_mutex_unlock(&adopting_lock);
    return a != NULL;
}
