/* streams: see streams.h. Durations in jsStreamConfig are nanoseconds; -1
 * bytes and 0 ns are JetStream's "no limit". */
#include "streams.h"

#include <string.h>

#include "log.h"
#include "subjects.h"

#define NS_PER_S 1000000000LL
#define CMD_MAX_AGE_S (7 * 24 * 3600LL) /* a command left this long is dropped */
#define DUPLICATES_NS (120 * NS_PER_S)  /* Nats-Msg-Id duplicate window */

static long replicas = 1;

void streams_set_replicas(long n)
{
    replicas = n;
}

long streams_replicas(void)
{
    return replicas;
}

static int64_t bytes_limit(long v)
{
    return v > 0 ? (int64_t)v : -1;
}

static void cmd_config(jsStreamConfig *sc, const char **subjects, const struct streams_limits *lim)
{
    jsStreamConfig_Init(sc);
    sc->Name = STREAM_CMD;
    subjects[0] = SUBJ_CMD_ALL;
    sc->Subjects = subjects;
    sc->SubjectsLen = 1;
    sc->Storage = js_FileStorage;
    sc->Retention = js_WorkQueuePolicy;
    sc->Duplicates = DUPLICATES_NS;
    sc->MaxAge = CMD_MAX_AGE_S * NS_PER_S;
    /* A full work queue refuses new commands (the client is told
     * "unavailable" at once) rather than dropping accepted ones. */
    sc->Discard = js_DiscardNew;
    sc->MaxBytes = bytes_limit(lim->cmd_max_bytes);
    sc->Replicas = replicas;
}

static void events_config(jsStreamConfig *sc, const char **subjects, const struct streams_limits *lim)
{
    jsStreamConfig_Init(sc);
    sc->Name = STREAM_EVENTS;
    subjects[0] = SUBJ_EVENT_ALL;
    sc->Subjects = subjects;
    sc->SubjectsLen = 1;
    sc->Storage = js_FileStorage;
    sc->Retention = js_LimitsPolicy;
    sc->MaxAge = (int64_t)lim->events_max_age_s * NS_PER_S;
    /* JetStream refuses a duplicate window longer than MaxAge. */
    sc->Duplicates = sc->MaxAge > 0 && sc->MaxAge < DUPLICATES_NS ? sc->MaxAge : DUPLICATES_NS;
    sc->Discard = js_DiscardOld; /* taps: the oldest go first */
    sc->MaxBytes = bytes_limit(lim->events_max_bytes);
    sc->Replicas = replicas;
}

static int same_limits(const jsStreamConfig *a, const jsStreamConfig *b)
{
    return a->MaxAge == b->MaxAge && a->MaxBytes == b->MaxBytes && a->Discard == b->Discard &&
           a->Duplicates == b->Duplicates && a->Replicas == b->Replicas;
}

static int failed(const char *name, const char *what, natsStatus s, jsErrCode jerr)
{
    log_warn("jetstream stream %s not ready (%s): %s (code %d)", name, what, natsStatus_GetText(s),
             (int)jerr);
    return -1;
}

/* Creates sc's stream when it is missing; when it exists, updates it to sc
 * unless create_only or its limits already are sc's. */
static int ensure(jsCtx *js, jsStreamConfig *sc, int create_only)
{
    jsErrCode jerr = 0;
    jsStreamInfo *si = NULL;
    natsStatus s = js_GetStreamInfo(&si, js, sc->Name, NULL, &jerr);
    if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr) {
        jerr = 0;
        s = js_AddStream(&si, js, sc, NULL, &jerr);
        if (s == NATS_OK)
            log_info("jetstream stream %s created max_bytes=%lld max_age_s=%lld", sc->Name,
                     (long long)sc->MaxBytes, (long long)(sc->MaxAge / NS_PER_S));
        else if (jerr == JSStreamNameExistErr) /* created meanwhile by another process */
            s = NATS_OK;
        jsStreamInfo_Destroy(si);
        return s == NATS_OK ? 0 : failed(sc->Name, "create", s, jerr);
    }
    if (s != NATS_OK)
        return failed(sc->Name, "info", s, jerr);
    int keep = create_only || same_limits(si->Config, sc);
    long long old_bytes = (long long)si->Config->MaxBytes,
              old_age = (long long)(si->Config->MaxAge / NS_PER_S), old_replicas = si->Config->Replicas;
    jsStreamInfo_Destroy(si);
    if (keep)
        return 0;
    si = NULL;
    s = js_UpdateStream(&si, js, sc, NULL, &jerr);
    jsStreamInfo_Destroy(si);
    if (s != NATS_OK)
        return failed(sc->Name, "update", s, jerr);
    log_info("jetstream stream %s updated max_bytes=%lld->%lld max_age_s=%lld->%lld replicas=%lld->%ld",
             sc->Name, old_bytes, (long long)sc->MaxBytes, old_age, (long long)(sc->MaxAge / NS_PER_S),
             old_replicas, (long)sc->Replicas);
    return 0;
}

int streams_ensure(jsCtx *js, const struct streams_limits *limits)
{
    static const struct streams_limits defaults = {STREAMS_EVENTS_MAX_AGE_S, STREAMS_EVENTS_MAX_BYTES,
                                                   STREAMS_CMD_MAX_BYTES};
    const struct streams_limits *lim = limits ? limits : &defaults;
    const char *cmd_subjects[1], *ev_subjects[1];
    jsStreamConfig cmd, ev;
    cmd_config(&cmd, cmd_subjects, lim);
    events_config(&ev, ev_subjects, lim);
    if (ensure(js, &cmd, !limits) != 0 || ensure(js, &ev, !limits) != 0)
        return -1;
    log_info("jetstream streams ready (%s, %s) replicas=%ld", STREAM_CMD, STREAM_EVENTS, replicas);
    return 0;
}
