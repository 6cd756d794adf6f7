/* engines: see engines.h. */

#include "engines.h"
#include "service_int.h"

int svc_engine_get(clr_service *svc, clr_engine **out, clr_error *err)
{
    pthread_mutex_lock(&svc->pool_lock);
    if (svc->pool_n > 0) {
        *out = svc->pool[--svc->pool_n];
        pthread_mutex_unlock(&svc->pool_lock);
        return 0;
    }
    pthread_mutex_unlock(&svc->pool_lock);
    clr_engine_options o = CLR_ENGINE_OPTIONS_INIT;
    o.host = svc->docker_host;
    return clr_engine_open(out, &o, err);
}

/* broken: the engine failed mid-call; do not reuse its connection. */
void svc_engine_put(clr_service *svc, clr_engine *eng, bool broken)
{
    if (!eng)
        return;
    pthread_mutex_lock(&svc->pool_lock);
    if (!broken && svc->pool_n < ENGINE_POOL_MAX) {
        svc->pool[svc->pool_n++] = eng;
        eng = NULL;
    }
    pthread_mutex_unlock(&svc->pool_lock);
    clr_engine_free(eng);
}
