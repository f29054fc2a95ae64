/* streams: see streams.h. Durations in jsStreamConfig are nanoseconds. */
#include "streams.h"

#include <string.h>

#include "log.h"
#include "subjects.h"

#define NS_PER_S 1000000000LL

static long replicas = 1;

void streams_set_replicas(long n)
{
    replicas = n;
}

long streams_replicas(void)
{
    return replicas;
}

static int ensure(jsCtx *js, jsStreamConfig *sc)
{
    jsErrCode jerr = 0;
    jsStreamInfo *si = NULL;
    natsStatus s = js_AddStream(&si, js, sc, NULL, &jerr);
    if (s != NATS_OK && jerr == JSStreamNameExistErr)
        s = js_UpdateStream(&si, js, sc, NULL, &jerr);
    jsStreamInfo_Destroy(si);
    if (s != NATS_OK) {
        log_warn("jetstream stream %s not ready: %s (code %d)", sc->Name, natsStatus_GetText(s), (int)jerr);
        return -1;
    }
    return 0;
}

int streams_ensure(jsCtx *js)
{
    jsStreamConfig cmd;
    const char *cmd_subjects[] = {SUBJ_CMD_ALL};
    jsStreamConfig_Init(&cmd);
    cmd.Name = STREAM_CMD;
    cmd.Subjects = cmd_subjects;
    cmd.SubjectsLen = 1;
    cmd.Storage = js_FileStorage;
    cmd.Retention = js_WorkQueuePolicy;
    cmd.Duplicates = 120 * NS_PER_S;
    cmd.MaxAge = 7 * 24 * 3600 * NS_PER_S;
    cmd.Replicas = replicas;

    jsStreamConfig ev;
    const char *ev_subjects[] = {SUBJ_EVENT_ALL};
    jsStreamConfig_Init(&ev);
    ev.Name = STREAM_EVENTS;
    ev.Subjects = ev_subjects;
    ev.SubjectsLen = 1;
    ev.Storage = js_FileStorage;
    ev.Retention = js_LimitsPolicy;
    ev.Duplicates = 120 * NS_PER_S;
    ev.MaxAge = 7 * 24 * 3600 * NS_PER_S;
    ev.Replicas = replicas;

    if (ensure(js, &cmd) != 0 || ensure(js, &ev) != 0)
        return -1;
    log_info("jetstream streams ready (%s, %s) replicas=%ld", STREAM_CMD, STREAM_EVENTS, replicas);
    return 0;
}
