/* HTTP client of the daemon, with libcurl over its unix socket. */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "client.h"

#define MAX_ANSWER (256u * 1024 * 1024)

const char *client_socket(void)
{
    const char *h = cli_global.host ? cli_global.host : getenv("CLEARING_HOST");
    if (!h || !*h)
        return CLIENT_DEFAULT_SOCKET;
    if (strncmp(h, "unix://", 7) == 0)
        return h + 7;
    return h;
}

struct sink {
    char *data;
    size_t len;
    bool overflow;
    void (*on_line)(void *ctx, json_t *line);
    void *ctx;
    size_t consumed;
};

static size_t on_data(char *p, size_t size, size_t n, void *ud)
{
    struct sink *s = ud;
    size_t len = size * n;
    if (s->len + len > MAX_ANSWER) {
        s->overflow = true;
        return 0;
    }
    char *d = realloc(s->data, s->len + len + 1);
    if (!d)
        return 0;
    memcpy(d + s->len, p, len);
    s->len += len;
    d[s->len] = '\0';
    s->data = d;
    if (s->on_line) {
        char *nl;
        while ((nl = memchr(s->data + s->consumed, '\n', s->len - s->consumed))) {
            json_t *j = json_loadb(s->data + s->consumed, (size_t)(nl - s->data) - s->consumed,
                                   JSON_ALLOW_NUL, NULL);
            if (j) {
                s->on_line(s->ctx, j);
                json_decref(j);
            }
            s->consumed = (size_t)(nl - s->data) + 1;
        }
    }
    return len;
}

static int perform(const char *method, const char *path, json_t *body, struct sink *s,
                   clr_error *err)
{
    static bool inited;
    if (!inited) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        inited = true;
    }
    char url[2048];
    snprintf(url, sizeof(url), "http://clearing%s", path);
    char *payload = body ? json_dumps(body, JSON_COMPACT) : NULL;
    CURL *c = curl_easy_init();
    if (!c) {
        free(payload);
        return clr_error_set(err, CLR_E_INTERNAL, ENOMEM, "out of memory");
    }
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    h = curl_slist_append(h, "Expect:");
    curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, client_socket());
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (payload) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, payload);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(payload));
    }
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    free(payload);
    if (rc != CURLE_OK) {
        if (rc == CURLE_COULDNT_CONNECT)
            return clr_error_set(err, CLR_E_UNAVAILABLE, ECONNREFUSED,
                                 "cannot reach the clearing daemon at %s: start it with "
                                 "'clearing serve', or point --host / CLEARING_HOST at its socket",
                                 client_socket());
        return clr_error_set(err, CLR_E_UNAVAILABLE, EIO, "talking to the daemon at %s: %s",
                             client_socket(), curl_easy_strerror(rc));
    }
    return (int)status;
}

void client_status_error(int status, json_t *j, clr_error *err)
{
    json_t *e = json_object_get(j, "error");
    const char *code = json_string_value(json_object_get(e, "code"));
    const char *msg = json_string_value(json_object_get(e, "message"));
    /* Without a code we know (a proxy's answer, an older daemon), the status says the class. */
    clr_error_code c = status == 400                   ? CLR_E_INVALID
                       : status == 401 || status == 403 ? CLR_E_DENIED
                       : status == 404                   ? CLR_E_NOT_FOUND
                       : status == 409                   ? CLR_E_CONFLICT
                       : status == 413 || status == 429 ? CLR_E_LIMIT
                       : status == 502                   ? CLR_E_ENGINE
                       : status == 503                   ? CLR_E_UNAVAILABLE
                       : status == 504                   ? CLR_E_TIMEOUT
                       : status == 507                   ? CLR_E_NO_SPACE
                                                         : CLR_E_INTERNAL;
    for (int i = CLR_E_INVALID; i <= CLR_E_INTERNAL; i++) {
        if (code && strcmp(code, clr_error_code_name((clr_error_code)i)) == 0)
            c = (clr_error_code)i;
    }
    clr_error_set(err, c, 0, "%s (HTTP %d)", msg ? msg : "the daemon answered an error", status);
}

int client_call(const char *method, const char *path, json_t *body, json_t **resp,
                clr_error *err)
{
    struct sink s = {0};
    int st = perform(method, path, body, &s, err);
    json_t *j = NULL;
    if (st >= 0 && s.len)
        j = json_loadb(s.data, s.len, JSON_ALLOW_NUL, NULL);
    free(s.data);
    if (st >= 400)
        client_status_error(st, j, err);
    if (resp)
        *resp = j;
    else
        json_decref(j);
    return st;
}

int client_stream(const char *method, const char *path, json_t *body,
                  void (*on_line)(void *ctx, json_t *line), void *ctx, clr_error *err)
{
    struct sink s = {.on_line = on_line, .ctx = ctx};
    int st = perform(method, path, body, &s, err);
    if (st >= 400) {
        json_t *j = json_loadb(s.data, s.len, JSON_ALLOW_NUL, NULL);
        client_status_error(st, j, err);
        json_decref(j);
    }
    free(s.data);
    return st;
}

int client_text(const char *method, const char *path, char **text, clr_error *err)
{
    struct sink s = {0};
    int st = perform(method, path, NULL, &s, err);
    if (st >= 400) {
        json_t *j = json_loadb(s.data ? s.data : "", s.len, JSON_ALLOW_NUL, NULL);
        client_status_error(st, j, err);
        json_decref(j);
        free(s.data);
        return st;
    }
    *text = s.data;
    return st;
}
