/* bitplan worker runtime (see include/bitplan/worker.h). */
#include "bitplan/worker.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <cblas.h>
#include <omp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#define REG_TIMEOUT_BEATS 3 /* heartbeats to wait for `welcome` */
#define READY_RETRY_MS 100  /* while not connected yet (ZMQ_IMMEDIATE) */

enum { SLOT_IDLE, SLOT_POSTED, SLOT_RUNNING, SLOT_READY };

typedef struct slot {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int state;
    int quit;
    int wake_fd;        /* write end of the pipe to the I/O thread */
    int threads;
    _Atomic uint64_t *progress;
    /* posted task */
    bp_task_fn fn;
    const msgpack_object *params;
    const bp_bin_view *bins;
    size_t n_bins;
    /* outcome */
    int rc;
    bp_error err;
    msgpack_sbuffer result;
    bp_task_ctx ctx;
} slot;

typedef struct worker {
    const bp_worker_opts *o;
    char name[256];
    void *zctx;
    void *sock;
    int registered;
    int ready_sent;
    int64_t reg_started, ready_retry_at, next_hb;
    int64_t hb_ms;
    int64_t backoff;
    uint64_t msg_id;
    bp_proto_out out;
    bp_proto_in in_a, in_b, *rx, *task_in;
    bp_msg msg_a, msg_b, *rxm, *task_msg;
    /* the task being computed */
    int busy;
    uint64_t task_id;
    uint64_t session;        /* registration count; a task belongs to one */
    uint64_t task_session;
    char task_hash[BP_PROTO_DEF_MAX_NAME_BYTES + 1];
    int abandoned;           /* result of the current task must be dropped */
    _Atomic uint64_t progress;
    slot s;
    pthread_t thread;
    int thread_started;
    int pipe_r, pipe_w;
} worker;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void wlog(const worker *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void wlog(const worker *w, const char *fmt, ...)
{
    if (!w->o->log)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(w->o->log, "bitplan worker %s: ", w->name);
    vfprintf(w->o->log, fmt, ap);
    fputc('\n', w->o->log);
    fflush(w->o->log);
    va_end(ap);
}

void bp_worker_opts_default(bp_worker_opts *o)
{
    memset(o, 0, sizeof *o);
    o->heartbeat_ms = 1000;
    o->reconnect_min_ms = 250;
    o->reconnect_max_ms = 32000;
}

/* ---- compute thread ---------------------------------------------------- */

static void *compute_main(void *arg)
{
    slot *s = arg;
    if (s->threads > 0) {
        omp_set_num_threads(s->threads); /* ICVs are per thread: set them here */
        /* OpenBLAS keeps its own (spinning) thread pool: without this, two
         * workers on two cores each run two BLAS threads and fight. */
        openblas_set_num_threads(s->threads);
    }
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!s->quit && s->state != SLOT_POSTED)
            pthread_cond_wait(&s->cv, &s->mu);
        if (s->quit) {
            pthread_mutex_unlock(&s->mu);
            return NULL;
        }
        s->state = SLOT_RUNNING;
        bp_task_fn fn = s->fn;
        pthread_mutex_unlock(&s->mu);

        /* The slot's task fields are only touched by the I/O thread while
         * the state is IDLE or READY, so reading them unlocked is safe. */
        msgpack_packer pk;
        msgpack_sbuffer_init(&s->result);
        msgpack_packer_init(&pk, &s->result, msgpack_sbuffer_write);
        memset(&s->ctx, 0, sizeof s->ctx);
        s->ctx.params = s->params;
        s->ctx.bins = s->bins;
        s->ctx.n_bins = s->n_bins;
        s->ctx.threads = s->threads > 0 ? s->threads : omp_get_max_threads();
        s->ctx.progress = s->progress;
        s->ctx.result = &pk;
        bp_error_clear(&s->err);
        int rc = fn(&s->ctx, &s->err);
        if (rc == BP_OK && s->result.size == 0)
            msgpack_pack_map(&pk, 0);
        if (rc == BP_OK && !s->result.data)
            rc = bp_error_set(&s->err, BP_ENOMEM, "task result: out of memory");

        pthread_mutex_lock(&s->mu);
        s->rc = rc;
        s->state = SLOT_READY;
        pthread_mutex_unlock(&s->mu);
        ssize_t wr;
        do
            wr = write(s->wake_fd, "r", 1);
        while (wr < 0 && errno == EINTR);
    }
}

static int slot_state(slot *s)
{
    pthread_mutex_lock(&s->mu);
    int st = s->state;
    pthread_mutex_unlock(&s->mu);
    return st;
}

static void slot_release(slot *s)
{
    msgpack_sbuffer_destroy(&s->result);
    memset(&s->result, 0, sizeof s->result);
    bp_task_ctx_free_bins(&s->ctx);
    pthread_mutex_lock(&s->mu);
    s->state = SLOT_IDLE;
    pthread_mutex_unlock(&s->mu);
}

/* ---- socket ------------------------------------------------------------ */

static int set_int(void *sock, int opt, int v)
{
    return zmq_setsockopt(sock, opt, &v, sizeof v);
}

static int open_socket(worker *w, bp_error *err)
{
    const bp_worker_opts *o = w->o;
    w->sock = zmq_socket(w->zctx, ZMQ_DEALER);
    if (!w->sock)
        return bp_error_set(err, BP_EIO, "worker socket: %s", zmq_strerror(zmq_errno()));
    bp_proto_limits lim;
    bp_proto_limits_default(&lim);
    lim.accept = BP_PROTO_FROM_COORDINATOR;
    int bad = bp_proto_socket_limits(w->sock, &lim, err) != BP_OK;
    bad = bad || set_int(w->sock, ZMQ_IMMEDIATE, 1);
    bad = bad || set_int(w->sock, ZMQ_RECONNECT_IVL, (int)o->reconnect_min_ms);
    bad = bad || set_int(w->sock, ZMQ_RECONNECT_IVL_MAX, (int)o->reconnect_max_ms);
    bad = bad || set_int(w->sock, ZMQ_HEARTBEAT_IVL, 1000);
    bad = bad || set_int(w->sock, ZMQ_HEARTBEAT_TIMEOUT, 3000);
    bad = bad || set_int(w->sock, ZMQ_HEARTBEAT_TTL, 3000);
    bad = bad || set_int(w->sock, ZMQ_HANDSHAKE_IVL, 5000);
    bad = bad || set_int(w->sock, ZMQ_SNDHWM, 100);
    bad = bad || set_int(w->sock, ZMQ_RCVHWM, 100);
    if (!bad && o->server_key) {
        bad = zmq_setsockopt(w->sock, ZMQ_CURVE_SERVERKEY, o->server_key, 40) ||
              zmq_setsockopt(w->sock, ZMQ_CURVE_PUBLICKEY, o->public_key, 40) ||
              zmq_setsockopt(w->sock, ZMQ_CURVE_SECRETKEY, o->secret_key, 40);
    }
    if (bad || zmq_connect(w->sock, o->endpoint) != 0) {
        int e = zmq_errno();
        zmq_close(w->sock);
        w->sock = NULL;
        return bp_error_set(err, BP_EIO, "worker: cannot connect to %s: %s", o->endpoint,
                            zmq_strerror(e));
    }
    w->registered = 0;
    w->ready_sent = 0;
    w->reg_started = now_ms();
    w->ready_retry_at = 0;
    return BP_OK;
}

static void close_socket(worker *w)
{
    if (w->sock)
        zmq_close(w->sock);
    w->sock = NULL;
    w->registered = 0;
    w->ready_sent = 0;
}

static int send_out(worker *w)
{
    bp_error e;
    return bp_proto_send(w->sock, NULL, 0, &w->out, &e);
}

static void send_disconnect(worker *w)
{
    if (w->sock && bp_proto_encode_disconnect(&w->out, ++w->msg_id, NULL) == BP_OK)
        (void)send_out(w);
}

static void send_heartbeat(worker *w)
{
    uint64_t p = atomic_load(&w->progress);
    int mine = w->busy && !w->abandoned && w->task_session == w->session;
    if (bp_proto_encode_heartbeat(&w->out, ++w->msg_id, p, mine ? &w->task_id : NULL, NULL) ==
        BP_OK)
        (void)send_out(w);
}

/* Leave the current registration. If a task is still running its result is
 * abandoned; re-exec the process when allowed (a hung task can only be
 * stopped that way). */
static void drop_registration(worker *w, const char *why)
{
    wlog(w, "%s; registering again", why);
    close_socket(w);
    if (w->busy) {
        w->abandoned = 1;
        if (w->o->reexec_argv) {
            wlog(w, "abandoning task %" PRIu64 ": re-executing", w->task_id);
            zmq_ctx_term(w->zctx);
            w->zctx = NULL;
            execv("/proc/self/exe", w->o->reexec_argv);
            wlog(w, "re-exec failed (%s); waiting for the task to end", strerror(errno));
            w->zctx = zmq_ctx_new();
            if (w->zctx)
                zmq_ctx_set(w->zctx, ZMQ_BLOCKY, 0);
        }
    }
}

/* ---- task handling ----------------------------------------------------- */

static void swap_task_buffers(worker *w)
{
    bp_proto_in *ti = w->task_in;
    bp_msg *tm = w->task_msg;
    w->task_in = w->rx;
    w->task_msg = w->rxm;
    w->rx = ti;
    w->rxm = tm;
}

static void start_task(worker *w)
{
    const bp_msg *m = w->rxm;
    char kind[BP_TASK_KIND_MAX];
    size_t kl = m->u.task.kind.len < sizeof kind - 1 ? m->u.task.kind.len : sizeof kind - 1;
    memcpy(kind, m->u.task.kind.ptr, kl);
    kind[kl] = '\0';
    bp_task_fn fn = bp_task_lookup(kind);
    if (!fn) {
        char msg[400];
        snprintf(msg, sizeof msg, "unknown task kind '%s' on worker %.200s", kind, w->name);
        if (bp_proto_encode_task_failed(&w->out, ++w->msg_id, m->u.task.task,
                                        bp_proto_wire_code(BP_EUNSUPPORTED), bp_str_c(msg),
                                        NULL) == BP_OK)
            (void)send_out(w);
        return;
    }
    bp_str h = {0};
    if (bp_mp_get_str(m->u.task.params, "hash", &h, NULL) != BP_OK || h.len == 0 ||
        h.len >= sizeof w->task_hash)
        h = bp_str_c("none");
    memcpy(w->task_hash, h.ptr, h.len);
    w->task_hash[h.len] = '\0';
    w->task_id = m->u.task.task;
    w->task_session = w->session;
    w->busy = 1;
    w->abandoned = 0;
    swap_task_buffers(w); /* the compute thread reads task_msg/task_in */
    slot *s = &w->s;
    pthread_mutex_lock(&s->mu);
    s->fn = fn;
    s->params = w->task_msg->u.task.params;
    s->bins = w->task_msg->bin;
    s->n_bins = w->task_msg->n_bin;
    s->state = SLOT_POSTED;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void finish_task(worker *w)
{
    slot *s = &w->s;
    int keep = !w->abandoned && w->registered && w->task_session == w->session && w->sock;
    if (keep) {
        bp_error e;
        int rc = s->rc;
        if (rc == BP_OK) {
            bp_bin_view views[BP_PROTO_MAX_BIN];
            for (size_t i = 0; i < s->ctx.n_out_bins; i++) {
                const bp_task_bin *b = &s->ctx.out_bins[i];
                views[i] = (bp_bin_view){bp_str_c(b->name), b->dtype, b->count, b->data,
                                         (size_t)b->count * bp_wire_dtype_size(b->dtype)};
            }
            rc = bp_proto_encode_task_result(&w->out, ++w->msg_id, w->task_id,
                                             bp_str_c(w->task_hash), s->result.data,
                                             s->result.size, views, s->ctx.n_out_bins, &e);
            if (rc != BP_OK)
                s->err = e;
        }
        if (rc != BP_OK) {
            /* bp_error messages (< 1 KiB) fit the 4 KiB text limit */
            rc = bp_proto_encode_task_failed(&w->out, ++w->msg_id, w->task_id,
                                             bp_proto_wire_code(rc), bp_str_c(s->err.msg), &e);
        }
        if (rc == BP_OK && send_out(w) != BP_OK)
            wlog(w, "could not send the result of task %" PRIu64, w->task_id);
    }
    slot_release(s);
    bp_msg_clear(w->task_msg);
    bp_proto_in_clear(w->task_in);
    w->busy = 0;
    w->abandoned = 0;
}

static void handle_message(worker *w)
{
    bp_msg *m = w->rxm;
    switch (m->type) {
    case BP_MSG_WELCOME:
        if (!w->registered) {
            w->registered = 1;
            w->session++;
            w->hb_ms = (int64_t)m->u.welcome.heartbeat_ms;
            w->backoff = w->o->reconnect_min_ms;
            w->next_hb = now_ms() + w->hb_ms;
            wlog(w, "registered (heartbeat %" PRId64 " ms)", w->hb_ms);
        }
        break;
    case BP_MSG_TASK:
        if (!w->registered || w->busy) {
            /* credit is one task; a second one means we are out of sync */
            send_disconnect(w);
            drop_registration(w, "unexpected task");
            break;
        }
        start_task(w);
        break;
    case BP_MSG_DISCONNECT:
        drop_registration(w, "coordinator sent disconnect");
        break;
    default:
        break;
    }
}

static void drain_socket(worker *w)
{
    for (int k = 0; k < 64 && w->sock; k++) {
        bp_error e;
        bp_proto_limits lim;
        bp_proto_limits_default(&lim);
        lim.accept = BP_PROTO_FROM_COORDINATOR;
        int rc = bp_proto_recv(w->sock, 0, &lim, ZMQ_DONTWAIT, w->rx, &e);
        if (rc == BP_ETIMEOUT)
            return;
        if (rc == BP_OK)
            rc = bp_proto_decode(w->rx->body, w->rx->n_body, &lim, w->rxm, &e);
        if (rc != BP_OK) {
            /* an invalid message: treat the peer as invalid and start over */
            bp_msg_clear(w->rxm);
            bp_proto_in_clear(w->rx);
            drop_registration(w, "invalid message from the coordinator");
            return;
        }
        handle_message(w); /* a task swaps rx into task_in: rx is then empty */
        bp_msg_clear(w->rxm);
        bp_proto_in_clear(w->rx);
    }
}

static void wait_ms(worker *w, int64_t ms)
{
    struct pollfd p = {w->pipe_r, POLLIN, 0};
    if (ms > 0 && !*w->o->stop)
        (void)poll(&p, 1, (int)ms);
}

int bp_worker_run(const bp_worker_opts *opts, bp_error *err)
{
    static volatile sig_atomic_t never;
    bp_worker_opts o = *opts;
    if (!o.endpoint)
        return bp_error_set(err, BP_EINVAL, "worker: no coordinator endpoint");
    if (!o.stop)
        o.stop = &never;
    if (o.heartbeat_ms <= 0)
        o.heartbeat_ms = 1000;
    if (o.reconnect_min_ms <= 0)
        o.reconnect_min_ms = 250;
    if (o.reconnect_max_ms < o.reconnect_min_ms)
        o.reconnect_max_ms = o.reconnect_min_ms;
    if ((o.server_key || o.public_key || o.secret_key) &&
        !(o.server_key && o.public_key && o.secret_key && strlen(o.server_key) == 40 &&
          strlen(o.public_key) == 40 && strlen(o.secret_key) == 40))
        return bp_error_set(err, BP_EINVAL, "worker: CURVE needs server, public and secret keys "
                                            "(40 Z85 characters each)");
    worker *w = calloc(1, sizeof *w);
    if (!w)
        return bp_error_set(err, BP_ENOMEM, "worker: out of memory");
    w->o = &o;
    w->pipe_r = w->pipe_w = -1;
    if (o.name)
        snprintf(w->name, sizeof w->name, "%s", o.name);
    else {
        char host[128] = "host";
        gethostname(host, sizeof host - 1);
        host[sizeof host - 1] = '\0';
        snprintf(w->name, sizeof w->name, "%s:%ld", host, (long)getpid());
    }
    w->hb_ms = o.heartbeat_ms;
    w->backoff = o.reconnect_min_ms;
    w->rx = &w->in_a;
    w->task_in = &w->in_b;
    w->rxm = &w->msg_a;
    w->task_msg = &w->msg_b;
    bp_proto_in_init(&w->in_a);
    bp_proto_in_init(&w->in_b);
    bp_msg_init(&w->msg_a);
    bp_msg_init(&w->msg_b);
    bp_proto_out_init(&w->out, NULL);
    atomic_init(&w->progress, 0);
    int rc = BP_OK;
    int fds[2];
    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) {
        rc = bp_error_set(err, BP_EIO, "worker: pipe: %s", strerror(errno));
        goto out;
    }
    w->pipe_r = fds[0];
    w->pipe_w = fds[1];
    pthread_mutex_init(&w->s.mu, NULL);
    pthread_cond_init(&w->s.cv, NULL);
    w->s.wake_fd = w->pipe_w;
    w->s.threads = o.threads;
    w->s.progress = &w->progress;
    if (pthread_create(&w->thread, NULL, compute_main, &w->s) != 0) {
        rc = bp_error_set(err, BP_EIO, "worker: cannot start the compute thread");
        goto out;
    }
    w->thread_started = 1;
    w->zctx = zmq_ctx_new();
    if (!w->zctx) {
        rc = bp_error_set(err, BP_EIO, "worker: zmq_ctx_new: %s", zmq_strerror(zmq_errno()));
        goto out;
    }
    zmq_ctx_set(w->zctx, ZMQ_BLOCKY, 0);
    wlog(w, "connecting to %s", o.endpoint);

    while (!*o.stop) {
        int64_t now = now_ms();
        if (!w->sock) {
            if (w->busy && w->abandoned) {
                /* wait for the abandoned task before taking new work */
                wait_ms(w, 200);
            } else {
                rc = open_socket(w, err);
                if (rc != BP_OK)
                    goto out;
            }
        }
        if (w->sock && !w->registered) {
            if (!w->ready_sent && now >= w->ready_retry_at) {
                if (bp_proto_encode_ready(&w->out, ++w->msg_id, bp_str_c(w->name),
                                          o.threads > 0 ? (uint64_t)o.threads
                                                        : (uint64_t)omp_get_num_procs(),
                                          (uint64_t)getpid(), NULL) == BP_OK &&
                    send_out(w) == BP_OK) {
                    w->ready_sent = 1;
                    w->reg_started = now;
                } else {
                    w->ready_retry_at = now + READY_RETRY_MS;
                }
            } else if (w->ready_sent && now - w->reg_started > REG_TIMEOUT_BEATS * w->hb_ms) {
                wlog(w, "no welcome from %s; retrying in %" PRId64 " ms", o.endpoint, w->backoff);
                close_socket(w);
                wait_ms(w, w->backoff);
                w->backoff = w->backoff * 2 > o.reconnect_max_ms ? o.reconnect_max_ms
                                                                 : w->backoff * 2;
                continue;
            }
        }
        if (w->sock && w->registered && now >= w->next_hb) {
            send_heartbeat(w);
            w->next_hb = now + w->hb_ms;
        }
        zmq_pollitem_t items[2] = {{NULL, w->pipe_r, ZMQ_POLLIN, 0}, {w->sock, 0, ZMQ_POLLIN, 0}};
        int64_t timeout = w->registered ? w->next_hb - now : READY_RETRY_MS;
        if (timeout < 0)
            timeout = 0;
        if (timeout > w->hb_ms)
            timeout = w->hb_ms;
        int n = zmq_poll(items, w->sock ? 2 : 1, (long)timeout);
        if (n < 0 && zmq_errno() != EINTR) {
            rc = bp_error_set(err, BP_EIO, "worker: zmq_poll: %s", zmq_strerror(zmq_errno()));
            goto out;
        }
        if (n > 0 && (items[0].revents & ZMQ_POLLIN)) {
            char buf[64];
            while (read(w->pipe_r, buf, sizeof buf) > 0) {
            }
        }
        if (w->busy && slot_state(&w->s) == SLOT_READY)
            finish_task(w);
        if (w->sock && n > 0 && (items[1].revents & ZMQ_POLLIN))
            drain_socket(w);
    }
    wlog(w, "stopping");
    if (w->registered)
        send_disconnect(w);
out:
    close_socket(w);
    if (w->zctx)
        zmq_ctx_term(w->zctx);
    w->zctx = NULL;
    if (w->thread_started) {
        pthread_mutex_lock(&w->s.mu);
        w->s.quit = 1;
        int running = w->s.state == SLOT_RUNNING || w->s.state == SLOT_POSTED;
        pthread_cond_signal(&w->s.cv);
        pthread_mutex_unlock(&w->s.mu);
        if (running) {
            /* a task cannot be interrupted; the process exit ends it */
            pthread_detach(w->thread);
            bp_proto_out_clear(&w->out);
            return rc; /* w and its buffers stay allocated for that thread */
        }
        pthread_join(w->thread, NULL);
        pthread_mutex_destroy(&w->s.mu);
        pthread_cond_destroy(&w->s.cv);
    }
    if (w->busy)
        slot_release(&w->s);
    bp_msg_clear(&w->msg_a);
    bp_msg_clear(&w->msg_b);
    bp_proto_in_clear(&w->in_a);
    bp_proto_in_clear(&w->in_b);
    bp_proto_out_clear(&w->out);
    if (w->pipe_r >= 0)
        close(w->pipe_r);
    if (w->pipe_w >= 0)
        close(w->pipe_w);
    free(w);
    return rc;
}
