/* bitplan coord: embedded mode — a private coordinator and local worker
 * processes for one job (see bp_coord_run_embedded in coord.h). */
#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bitplan/coord.h"
#include "coord_internal.h"

extern char **environ;

#define MAX_LOCAL_WORKERS 256

typedef struct spawner {
    const char *exe;
    char endpoint[160];
    char threads[16];
    char hb[24];
    char **envp;
    pid_t pids[MAX_LOCAL_WORKERS];
    int n;
} spawner;

void bp_coord_embedded_opts_default(bp_coord_embedded_opts *o)
{
    memset(o, 0, sizeof *o);
}

/* environ plus the OpenMP settings a worker needs at exec time (libgomp
 * reads them in a load-time constructor, so a setenv in the child would be
 * too late). Variables the user already set are kept. */
static char **worker_env(int threads)
{
    size_t n = 0;
    while (environ[n])
        n++;
    char **envp = calloc(n + 5, sizeof *envp);
    if (!envp)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        envp[k++] = environ[i];
    static char nthreads[32], nblas[40];
    snprintf(nthreads, sizeof nthreads, "OMP_NUM_THREADS=%d", threads);
    /* OpenBLAS sizes its thread pool when the library loads, so the worker
     * cannot shrink it fully later: give it the worker's share up front. */
    snprintf(nblas, sizeof nblas, "OPENBLAS_NUM_THREADS=%d", threads);
    if (!getenv("OMP_WAIT_POLICY"))
        envp[k++] = "OMP_WAIT_POLICY=PASSIVE";
    if (!getenv("OMP_DYNAMIC"))
        envp[k++] = "OMP_DYNAMIC=false";
    if (!getenv("OMP_NUM_THREADS"))
        envp[k++] = nthreads;
    if (!getenv("OPENBLAS_NUM_THREADS"))
        envp[k++] = nblas;
    envp[k] = NULL;
    return envp;
}

static pid_t spawn_one(spawner *s)
{
    char *argv[] = {(char *)"bitplan", (char *)"worker", (char *)"--connect", s->endpoint,
                    (char *)"--threads", s->threads, (char *)"--heartbeat-ms", s->hb,
                    (char *)"--die-with-parent", (char *)"--quiet", NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, s->exe, NULL, NULL, argv, s->envp);
    return rc == 0 ? pid : -1;
}

static void stop_workers(spawner *s)
{
    for (int i = 0; i < s->n; i++)
        if (s->pids[i] > 0)
            kill(s->pids[i], SIGTERM);
    int64_t deadline = bp__now_ms() + 2000;
    for (int i = 0; i < s->n; i++) {
        if (s->pids[i] <= 0)
            continue;
        for (;;) {
            pid_t r = waitpid(s->pids[i], NULL, WNOHANG);
            if (r == s->pids[i] || (r < 0 && errno != EINTR))
                break;
            if (bp__now_ms() > deadline) {
                kill(s->pids[i], SIGKILL);
                while (waitpid(s->pids[i], NULL, 0) < 0 && errno == EINTR) {
                }
                break;
            }
            struct timespec ts = {0, 10000000L};
            nanosleep(&ts, NULL);
        }
        s->pids[i] = -1;
    }
}

static void draw_bar(const bp_coord_job_info *info, int final)
{
    static int tty = -1;
    if (tty < 0)
        tty = isatty(STDERR_FILENO);
    double frac = info->total ? (double)info->done / (double)info->total : 0.0;
    char eta[32] = "";
    if (info->has_eta && !final)
        snprintf(eta, sizeof eta, " ETA %.0fs", info->eta_s);
    if (tty) {
        char bar[31];
        int fill = (int)(frac * 30 + 0.5);
        for (int i = 0; i < 30; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[30] = '\0';
        fprintf(stderr, "\rplan [%s] %llu/%llu tasks %5.1f%%%s   %s", bar,
                (unsigned long long)info->done, (unsigned long long)info->total, 100.0 * frac,
                eta, final ? "\n" : "");
    } else {
        fprintf(stderr, "plan: %llu/%llu tasks (%.1f%%)%s\n", (unsigned long long)info->done,
                (unsigned long long)info->total, 100.0 * frac, eta);
    }
    fflush(stderr);
}

int bp_coord_run_embedded_ex(const char *spec_json, const bp_coord_embedded_opts *eo,
                             char **result_json, bp_error *err)
{
    *result_json = NULL;
    bp_coord_embedded_opts o;
    if (eo)
        o = *eo;
    else
        bp_coord_embedded_opts_default(&o);
    if (!spec_json)
        return bp_error_set(err, BP_EINVAL, "embedded: no job spec");
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 1)
        cores = 1;
    int n = o.n_workers > 0 ? o.n_workers : (int)cores;
    if (n > MAX_LOCAL_WORKERS)
        n = MAX_LOCAL_WORKERS;
    int threads = o.threads_per_worker > 0 ? o.threads_per_worker
                                           : (int)(cores / n > 0 ? cores / n : 1);
    uint32_t max_respawns = o.max_respawns ? o.max_respawns : (uint32_t)(4 * n + 8);

    spawner s;
    memset(&s, 0, sizeof s);
    s.exe = o.exe ? o.exe : getenv("BITPLAN_EXE") ? getenv("BITPLAN_EXE") : "/proc/self/exe";
    const char *tmp = getenv("TMPDIR");
    char dir[128];
    snprintf(dir, sizeof dir, "%s/bitplan-XXXXXX", tmp && strlen(tmp) < 80 ? tmp : "/tmp");
    if (!mkdtemp(dir))
        return bp_error_set(err, BP_EIO, "embedded: mkdtemp %s: %s", dir, strerror(errno));
    snprintf(s.endpoint, sizeof s.endpoint, "ipc://%s/w.sock", dir);
    snprintf(s.threads, sizeof s.threads, "%d", threads);
    snprintf(s.hb, sizeof s.hb, "%lld", (long long)(o.heartbeat_ms > 0 ? o.heartbeat_ms : 1000));
    s.envp = worker_env(threads);
    bp_coord *c = NULL;
    int rc = BP_OK;
    if (!s.envp) {
        rc = bp_error_set(err, BP_ENOMEM, "out of memory");
        goto out;
    }
    /* Spawn first: this process has no ZeroMQ context yet (see coord.h). */
    for (int i = 0; i < n; i++) {
        s.pids[i] = spawn_one(&s);
        if (s.pids[i] < 0) {
            rc = bp_error_set(err, BP_EIO, "embedded: cannot start worker %s: %s", s.exe,
                              strerror(errno));
            goto out;
        }
        s.n = i + 1;
    }
    bp_coord_opts co;
    bp_coord_opts_default(&co);
    co.worker_bind = s.endpoint;
    if (o.heartbeat_ms > 0)
        co.heartbeat_ms = o.heartbeat_ms;
    if (o.stall_ms > 0)
        co.stall_ms = o.stall_ms;
    if (o.max_attempts)
        co.max_attempts = o.max_attempts;
    if ((rc = bp_coord_new(&co, &c, err)) != BP_OK)
        goto out;
    char job[BP_COORD_JOB_ID_MAX];
    if ((rc = bp_coord_submit(c, spec_json, strlen(spec_json), job, err)) != BP_OK)
        goto out;
    int64_t start = bp__now_ms(), last_draw = 0;
    int draw_every = isatty(STDERR_FILENO) ? 200 : 2000;
    bp_coord_job_info info;
    for (;;) {
        if ((rc = bp_coord_poll(c, 100, err)) != BP_OK)
            goto out;
        if ((rc = bp_coord_status(c, job, &info, err)) != BP_OK)
            goto out;
        int ended = strcmp(info.state, "queued") && strcmp(info.state, "running");
        int64_t now = bp__now_ms();
        if (!o.quiet && (ended || now - last_draw >= draw_every)) {
            draw_bar(&info, ended);
            last_draw = now;
        }
        if (ended)
            break;
        if (o.timeout_ms > 0 && now - start > o.timeout_ms) {
            rc = bp_error_set(err, BP_ETIMEOUT, "embedded: job did not finish in %lld ms",
                              (long long)o.timeout_ms);
            goto out;
        }
        /* Reap crashed workers and start replacements; the coordinator has
         * already requeued (or quarantined) what they held. */
        for (int i = 0; i < s.n; i++) {
            int st;
            if (s.pids[i] > 0 && waitpid(s.pids[i], &st, WNOHANG) == s.pids[i]) {
                s.pids[i] = -1;
                if (max_respawns == 0)
                    continue;
                max_respawns--;
                s.pids[i] = spawn_one(&s);
            }
        }
        int alive = 0;
        for (int i = 0; i < s.n; i++)
            alive += s.pids[i] > 0;
        if (!alive) {
            rc = bp_error_set(err, BP_EIO, "embedded: every worker died (respawn limit reached)");
            goto out;
        }
    }
    rc = bp_coord_result(c, job, result_json, err);
out:
    bp_coord_destroy(&c);
    stop_workers(&s);
    free(s.envp);
    char sock[200];
    snprintf(sock, sizeof sock, "%s/w.sock", dir);
    unlink(sock);
    rmdir(dir);
    return rc;
}

int bp_coord_run_embedded(const char *spec_json, int n_workers, int quiet, char **result_json,
                          bp_error *err)
{
    bp_coord_embedded_opts o;
    bp_coord_embedded_opts_default(&o);
    o.n_workers = n_workers;
    o.quiet = quiet;
    return bp_coord_run_embedded_ex(spec_json, &o, result_json, err);
}
