/* A worker-table entry is bound to the CURVE key its worker registered
 * with. An in-process CURVE coordinator (ipc endpoint under the test's
 * scratch directory) and raw DEALERs that choose their routing id: worker A
 * registers and takes a lease, drops its connection, and B - another listed
 * key - connects under A's routing id and reports A's lease done, then sends
 * garbage. Both messages must be dropped as identity mismatches without
 * touching A's entry or lease. A itself, reconnecting with the same routing
 * id, is still accepted. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "bitplan/coord.h"
#include "coord_test_util.h"

#define RID "w-fixed"

typedef struct keypair {
    char pub[41], sec[41];
} keypair;

typedef struct fake_worker {
    void *ctx, *sock;
    bp_proto_out out;
    bp_proto_in in;
    bp_msg msg;
} fake_worker;

typedef struct fixture {
    char dir[1024];
    char ep[1200];
    char log_path[1200];
    FILE *log;
    keypair server, a, b;
    bp_coord *c;
} fixture;

static void make_keys(keypair *k)
{
    assert_int_equal(zmq_curve_keypair(k->pub, k->sec), 0);
}

static int setup(void **state)
{
    static fixture f;
    memset(&f, 0, sizeof f);
    setenv("BITPLAN_TEST_KINDS", "1", 1);
    assert_true(zmq_has("curve"));
    fresh_dir(f.dir, sizeof f.dir, "keybind");
    make_keys(&f.server);
    make_keys(&f.a);
    make_keys(&f.b);
    char allow[1200];
    snprintf(allow, sizeof allow, "%s/allow.txt", f.dir);
    FILE *fp = fopen(allow, "w");
    assert_non_null(fp);
    fprintf(fp, "%s\n%s\n", f.a.pub, f.b.pub);
    fclose(fp);
    snprintf(f.ep, sizeof f.ep, "ipc://%s/w.sock", f.dir);
    snprintf(f.log_path, sizeof f.log_path, "%s/coord.log", f.dir);
    f.log = fopen(f.log_path, "w");
    assert_non_null(f.log);

    bp_coord_opts o;
    bp_coord_opts_default(&o);
    o.worker_bind = f.ep;
    o.curve_secret_key = f.server.sec;
    o.allow_keys_file = allow;
    /* A's entry must outlive the whole impostor phase without heartbeats. */
    o.liveness = 20;
    o.log = f.log;
    bp_error e;
    bp_error_clear(&e);
    int rc = bp_coord_new(&o, &f.c, &e);
    if (rc)
        fprintf(stderr, "coord: %s\n", e.msg);
    assert_int_equal(rc, BP_OK);
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    bp_coord_destroy(&f->c);
    if (f->log)
        fclose(f->log);
    return 0;
}

static void set_key(void *s, int opt, const char *k)
{
    assert_int_equal(zmq_setsockopt(s, opt, k, 40), 0);
}

static void fw_open(fake_worker *w, const fixture *f, const keypair *k)
{
    memset(w, 0, sizeof *w);
    w->ctx = zmq_ctx_new();
    w->sock = zmq_socket(w->ctx, ZMQ_DEALER);
    assert_non_null(w->sock);
    int zero = 0;
    assert_int_equal(zmq_setsockopt(w->sock, ZMQ_LINGER, &zero, sizeof zero), 0);
    assert_int_equal(zmq_setsockopt(w->sock, ZMQ_ROUTING_ID, RID, strlen(RID)), 0);
    set_key(w->sock, ZMQ_CURVE_SERVERKEY, f->server.pub);
    set_key(w->sock, ZMQ_CURVE_PUBLICKEY, k->pub);
    set_key(w->sock, ZMQ_CURVE_SECRETKEY, k->sec);
    assert_int_equal(zmq_connect(w->sock, f->ep), 0);
    bp_proto_out_init(&w->out, NULL);
    bp_proto_in_init(&w->in);
    bp_msg_init(&w->msg);
}

static void fw_close(fake_worker *w)
{
    bp_msg_clear(&w->msg);
    bp_proto_in_clear(&w->in);
    bp_proto_out_clear(&w->out);
    zmq_close(w->sock);
    zmq_ctx_term(w->ctx);
    memset(w, 0, sizeof *w);
}

static void fw_send(fake_worker *w)
{
    assert_int_equal(bp_proto_send(w->sock, NULL, 0, &w->out, NULL), BP_OK);
}

/* Run the coordinator until w receives a message of type t (left in
 * w->msg) or ms pass. */
static int fw_expect(fixture *f, fake_worker *w, bp_msg_type t, long ms)
{
    int64_t until = t_now_ms() + ms;
    while (t_now_ms() < until) {
        assert_int_equal(bp_coord_poll(f->c, 10, NULL), BP_OK);
        if (bp_proto_recv(w->sock, 0, NULL, ZMQ_DONTWAIT, &w->in, NULL) != BP_OK)
            continue;
        if (bp_proto_decode(w->in.body, w->in.n_body, NULL, &w->msg, NULL) == BP_OK &&
            w->msg.type == t)
            return 1;
    }
    return 0;
}

static void pump(fixture *f, long ms)
{
    int64_t until = t_now_ms() + ms;
    while (t_now_ms() < until)
        assert_int_equal(bp_coord_poll(f->c, 10, NULL), BP_OK);
}

static bp_coord_stats stats(const fixture *f)
{
    bp_coord_stats st;
    bp_coord_get_stats(f->c, &st);
    return st;
}

/* Run the coordinator until pred holds on its stats or ms pass. */
static int pump_until(fixture *f, int (*pred)(const bp_coord_stats *), long ms)
{
    int64_t until = t_now_ms() + ms;
    while (t_now_ms() < until) {
        assert_int_equal(bp_coord_poll(f->c, 10, NULL), BP_OK);
        bp_coord_stats st = stats(f);
        if (pred(&st))
            return 1;
    }
    return 0;
}

static int two_mismatches(const bp_coord_stats *st)
{
    return st->identity_mismatches >= 2;
}

static int one_result(const bp_coord_stats *st)
{
    return st->results_accepted >= 1;
}

static void send_result(fake_worker *w, uint64_t task, const char *hash)
{
    assert_int_equal(bp_proto_encode_task_result(&w->out, 50, task, bp_str_c(hash), NULL, 0,
                                                 NULL, 0, NULL),
                     BP_OK);
    fw_send(w);
}

static size_t count_occurrences(const char *s, const char *what)
{
    size_t n = 0;
    for (const char *p = s; (p = strstr(p, what)) != NULL; p += strlen(what))
        n++;
    return n;
}

static void test_impostor_under_anothers_routing_id(void **state)
{
    fixture *f = *state;
    fake_worker w;

    /* A registers and is leased the job's only task */
    fw_open(&w, f, &f->a);
    assert_int_equal(bp_proto_encode_ready(&w.out, 1, bp_str_c("A"), 1, 4242, NULL), BP_OK);
    fw_send(&w);
    assert_true(fw_expect(f, &w, BP_MSG_WELCOME, 10000));
    const char *spec = "{\"kind\":\"test\",\"tasks\":1,\"task_kind\":\"noop\",\"seed\":3}";
    char job[BP_COORD_JOB_ID_MAX];
    assert_int_equal(bp_coord_submit(f->c, spec, strlen(spec), job, NULL), BP_OK);
    assert_true(fw_expect(f, &w, BP_MSG_TASK, 10000));
    uint64_t task = w.msg.u.task.task;
    bp_str h;
    assert_int_equal(bp_mp_get_str(w.msg.u.task.params, "hash", &h, NULL), BP_OK);
    char hash[128];
    assert_true(h.len < sizeof hash);
    memcpy(hash, h.ptr, h.len);
    hash[h.len] = '\0';

    /* A's connection drops; its entry and lease stay until they expire */
    fw_close(&w);
    pump(f, 500);
    bp_coord_stats st = stats(f);
    assert_int_equal(st.workers, 1);
    assert_int_equal(st.tasks_leased, 1);

    /* B, also on the allow-list, takes over A's routing id: it reports A's
     * lease done (with the right hash), then sends garbage that would get
     * a genuine peer dropped */
    fw_open(&w, f, &f->b);
    send_result(&w, task, hash);
    assert_int_equal(zmq_send(w.sock, "xx", 2, 0), 2);
    assert_true(pump_until(f, two_mismatches, 10000));
    pump(f, 200);
    st = stats(f);
    assert_int_equal(st.identity_mismatches, 2);
    assert_int_equal(st.results_accepted, 0);
    assert_int_equal(st.results_dropped, 0);
    assert_int_equal(st.protocol_errors, 0);
    assert_int_equal(st.workers, 1);
    assert_int_equal(st.workers_joined, 1);
    assert_int_equal(st.workers_lost, 0);
    assert_int_equal(st.tasks_requeued, 0);
    bp_coord_job_info info;
    assert_int_equal(bp_coord_status(f->c, job, &info, NULL), BP_OK);
    assert_string_equal(info.state, "running");
    assert_int_equal(info.done, 0);
    /* nothing was answered to the impostor (no disconnect, no welcome) */
    assert_int_equal(bp_proto_recv(w.sock, 0, NULL, ZMQ_DONTWAIT, &w.in, NULL), BP_ETIMEOUT);
    fw_close(&w);
    pump(f, 500);

    /* control: A comes back under its routing id with its own key */
    fw_open(&w, f, &f->a);
    send_result(&w, task, hash);
    assert_true(pump_until(f, one_result, 10000));
    st = stats(f);
    assert_int_equal(st.identity_mismatches, 2);
    assert_int_equal(st.results_accepted, 1);
    assert_int_equal(st.protocol_errors, 0);
    assert_int_equal(st.workers, 1);
    assert_int_equal(st.workers_lost, 0);
    assert_int_equal(bp_coord_status(f->c, job, &info, NULL), BP_OK);
    assert_string_equal(info.state, "done");
    fw_close(&w);

    fflush(f->log);
    char *log = slurp_file(f->log_path);
    assert_non_null(log);
    /* logged once per peer, however many messages were dropped */
    assert_int_equal(count_occurrences(log, "worker A: message from a different CURVE key "
                                            "dropped"),
                     1);
    free(log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_impostor_under_anothers_routing_id, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
