/* HTTP client of the daemon, with libcurl over its unix socket. */
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "client.h"
#include "http_sink.h"

const char *client_socket(void)
{
    const char *h = cli_global.host ? cli_global.host : getenv("CLEARING_HOST");
    if (!h || !*h)
        return CLIENT_DEFAULT_SOCKET;
    if (strncmp(h, "unix://", 7) == 0)
        return h + 7;
    return h;
}

/* client_stream's callback, called through the sink's (which may stop a stream; this one never
 * does). */
struct line_cb {
    void (*on_line)(void *ctx, json_t *line);
    void *ctx;
};

static bool pass_line(void *ctx, json_t *line)
{
    struct line_cb *cb = ctx;
    cb->on_line(cb->ctx, line);
    return true;
}

static int perform(const char *method, const char *path, json_t *body, struct http_sink *s,
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
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, http_sink_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (payload) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, payload);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(payload));
    }
    s->curl = c;
    CURLcode rc = curl_easy_perform(c);
    s->curl = NULL;
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
    http_answer_error(status, j, err);
}

int client_call(const char *method, const char *path, json_t *body, json_t **resp,
                clr_error *err)
{
    struct http_sink s = {0};
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
    struct line_cb cb = {on_line, ctx};
    struct http_sink s = {.on_line = pass_line, .ctx = &cb};
    int st = perform(method, path, body, &s, err);
    if (st >= 400) {
        json_t *j = json_loadb(s.data, s.len, JSON_ALLOW_NUL, NULL);
        client_status_error(st, j, err);
        json_decref(j);
    } else if (st >= 0) {
        http_sink_finish(&s);
    }
    free(s.data);
    return st;
}

int client_text(const char *method, const char *path, char **text, clr_error *err)
{
    struct http_sink s = {0};
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
