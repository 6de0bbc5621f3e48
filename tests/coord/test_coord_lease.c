/* Lease table state machine with an injected clock (no sockets, no sleeps). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "bitplan/lease.h"

static bp_lease_table *mk(int64_t hb, uint32_t live, int64_t stall, uint32_t attempts)
{
    bp_lease_cfg cfg = {hb, live, stall, 0, attempts, 8};
    bp_lease_table *t = NULL;
    assert_int_equal(bp_lease_table_new(&cfg, &t), BP_OK);
    return t;
}

static void test_lease_grant_complete(void **state)
{
    (void)state;
    bp_lease_table *t = mk(1000, 3, 5000, 3);
    uint32_t w;
    assert_int_equal(bp_lease_task_add(t, 1), BP_OK);
    assert_int_equal(bp_lease_task_add(t, 1), BP_EINVAL); /* duplicate id */
    assert_int_equal(bp_lease_worker_add(t, 0, &w), BP_OK);
    assert_int_equal(bp_lease_task_state(t, 1, NULL, NULL), BP_LEASE_QUEUED);
    assert_int_equal(bp_lease_grant(t, w, 1, 10), BP_OK);
    assert_int_equal(bp_lease_grant(t, w, 1, 10), BP_EINVAL); /* busy / not queued */
    assert_int_equal(bp_lease_worker_task(t, w), 1);
    assert_int_equal(bp_lease_task_remove(t, 1), BP_EINVAL); /* leased */
    assert_int_equal(bp_lease_complete(t, w, 1), BP_OK);
    assert_int_equal(bp_lease_task_state(t, 1, NULL, NULL), BP_LEASE_DONE);
    assert_int_equal(bp_lease_worker_task(t, w), 0);
    /* duplicate result: refused */
    assert_int_equal(bp_lease_complete(t, w, 1), BP_ENOTFOUND);
    assert_int_equal(bp_lease_task_remove(t, 1), BP_OK);
    assert_int_equal(bp_lease_task_state(t, 1, NULL, NULL), BP_LEASE_NONE);
    bp_lease_table_destroy(&t);
    bp_lease_table_destroy(&t);
}

static void test_lease_expires_on_worker_death(void **state)
{
    (void)state;
    bp_lease_table *t = mk(1000, 3, 60000, 3);
    uint32_t w1, w2;
    bp_lease_worker_add(t, 0, &w1);
    bp_lease_worker_add(t, 0, &w2);
    bp_lease_task_add(t, 7);
    assert_int_equal(bp_lease_grant(t, w1, 7, 0), BP_OK);
    bp_lease_event ev[8];
    size_t n = 0;
    /* both heartbeat until 2000; then w1 goes silent */
    bp_lease_worker_seen(t, w1, 2000, NULL);
    bp_lease_worker_seen(t, w2, 2000, NULL);
    bp_lease_tick(t, 4900, ev, 8, &n);
    assert_int_equal(n, 0);
    bp_lease_worker_seen(t, w2, 4900, NULL);
    bp_lease_tick(t, 5001, ev, 8, &n); /* 3001 ms of silence > 3 x 1000 */
    assert_int_equal(n, 2);
    assert_int_equal(ev[0].kind, BP_LEASE_EV_WORKER_DEAD);
    assert_int_equal(ev[0].worker, w1);
    assert_int_equal(ev[0].task, 7);
    assert_int_equal(ev[1].kind, BP_LEASE_EV_REQUEUED);
    assert_int_equal(ev[1].task, 7);
    assert_int_equal(ev[1].attempts, 1);
    assert_false(bp_lease_worker_exists(t, w1));
    assert_true(bp_lease_worker_exists(t, w2));
    uint32_t att;
    assert_int_equal(bp_lease_task_state(t, 7, &att, NULL), BP_LEASE_QUEUED);
    assert_int_equal(att, 1);
    /* the dead worker's late result is dropped: it no longer holds the lease */
    assert_int_equal(bp_lease_complete(t, w1, 7), BP_ENOTFOUND);
    /* another worker takes it and finishes */
    assert_int_equal(bp_lease_grant(t, w2, 7, 5001), BP_OK);
    assert_int_equal(bp_lease_complete(t, w2, 7), BP_OK);
    bp_lease_table_destroy(&t);
}

static void test_lease_expires_after_stall_window(void **state)
{
    (void)state;
    bp_lease_table *t = mk(1000, 3, 5000, 3);
    uint32_t w;
    bp_lease_worker_add(t, 0, &w);
    bp_lease_task_add(t, 3);
    bp_lease_grant(t, w, 3, 0);
    bp_lease_event ev[8];
    size_t n = 0;
    uint64_t p = 0;
    /* heartbeats keep the worker alive; progress moves until t=4000 */
    for (int64_t now = 1000; now <= 4000; now += 1000) {
        p++;
        bp_lease_worker_seen(t, w, now, &p);
        bp_lease_tick(t, now, ev, 8, &n);
        assert_int_equal(n, 0);
    }
    /* from here the counter is stuck but heartbeats keep coming */
    for (int64_t now = 5000; now <= 9000; now += 1000) {
        bp_lease_worker_seen(t, w, now, &p);
        bp_lease_tick(t, now, ev, 8, &n);
        assert_int_equal(n, 0); /* 5000 ms window not yet exceeded */
    }
    bp_lease_worker_seen(t, w, 9001, &p);
    bp_lease_tick(t, 9001, ev, 8, &n);
    assert_int_equal(n, 2);
    assert_int_equal(ev[0].kind, BP_LEASE_EV_WORKER_STALLED);
    assert_int_equal(ev[1].kind, BP_LEASE_EV_REQUEUED);
    assert_int_equal(ev[1].task, 3);
    assert_false(bp_lease_worker_exists(t, w));
    bp_lease_table_destroy(&t);
}

static void test_lease_idle_worker_never_stalls(void **state)
{
    (void)state;
    bp_lease_table *t = mk(1000, 3, 2000, 3);
    uint32_t w;
    bp_lease_worker_add(t, 0, &w);
    bp_lease_event ev[8];
    size_t n = 0;
    for (int64_t now = 500; now <= 20000; now += 500) {
        bp_lease_worker_seen(t, w, now, NULL);
        bp_lease_tick(t, now, ev, 8, &n);
    }
    assert_int_equal(n, 0);
    /* a new lease restarts the stall window even if the counter is old */
    bp_lease_task_add(t, 9);
    bp_lease_grant(t, w, 9, 20000);
    bp_lease_worker_seen(t, w, 21500, NULL);
    bp_lease_tick(t, 21500, ev, 8, &n);
    assert_int_equal(n, 0);
    bp_lease_table_destroy(&t);
}

static void test_lease_quarantine_after_three_attempts(void **state)
{
    (void)state;
    bp_lease_table *t = mk(1000, 3, 60000, 3);
    bp_lease_task_add(t, 42);
    bp_lease_event ev[8];
    for (int k = 1; k <= 3; k++) {
        uint32_t w;
        assert_int_equal(bp_lease_worker_add(t, 0, &w), BP_OK);
        assert_int_equal(bp_lease_grant(t, w, 42, 0), BP_OK);
        size_t n = 0;
        /* the worker crashes: its connection is gone */
        assert_int_equal(bp_lease_worker_remove(t, w, 1, ev, 8, &n), BP_OK);
        assert_int_equal(n, 1);
        assert_int_equal(ev[0].task, 42);
        assert_int_equal(ev[0].attempts, (uint32_t)k);
        assert_int_equal(ev[0].kind, k < 3 ? BP_LEASE_EV_REQUEUED : BP_LEASE_EV_QUARANTINED);
    }
    assert_int_equal(bp_lease_task_state(t, 42, NULL, NULL), BP_LEASE_QUARANTINED);
    uint32_t w;
    bp_lease_worker_add(t, 0, &w);
    assert_int_equal(bp_lease_grant(t, w, 42, 0), BP_EINVAL); /* never leased again */
    bp_lease_table_destroy(&t);
}

static void test_lease_clean_leave_does_not_count(void **state)
{
    (void)state;
    bp_lease_table *t = mk(1000, 3, 60000, 2);
    bp_lease_task_add(t, 5);
    bp_lease_event ev[8];
    for (int k = 0; k < 5; k++) {
        uint32_t w;
        bp_lease_worker_add(t, 0, &w);
        bp_lease_grant(t, w, 5, 0);
        size_t n = 0;
        bp_lease_worker_remove(t, w, 0, ev, 8, &n);
        assert_int_equal(ev[0].kind, BP_LEASE_EV_REQUEUED);
    }
    uint32_t att;
    assert_int_equal(bp_lease_task_state(t, 5, &att, NULL), BP_LEASE_QUEUED);
    assert_int_equal(att, 0);
    bp_lease_table_destroy(&t);
}

static void test_lease_dedup_late_result_after_reassignment(void **state)
{
    (void)state;
    bp_lease_table *t = mk(1000, 3, 3000, 3);
    uint32_t slow, fast;
    bp_lease_worker_add(t, 0, &slow);
    bp_lease_worker_add(t, 0, &fast);
    bp_lease_task_add(t, 11);
    bp_lease_grant(t, slow, 11, 0);
    bp_lease_event ev[8];
    size_t n = 0;
    uint64_t p = 5;
    bp_lease_worker_seen(t, slow, 3500, &p); /* counter moved once at 3500... */
    bp_lease_worker_seen(t, fast, 3500, NULL);
    bp_lease_worker_seen(t, slow, 6000, &p);
    bp_lease_worker_seen(t, fast, 6000, NULL);
    bp_lease_tick(t, 6600, ev, 8, &n); /* ...then stuck > 3000 ms */
    assert_int_equal(n, 2);
    assert_int_equal(ev[0].kind, BP_LEASE_EV_WORKER_STALLED);
    assert_int_equal(bp_lease_grant(t, fast, 11, 6600), BP_OK);
    /* the slow worker finally answers: dropped; the holder's is accepted once */
    assert_int_equal(bp_lease_complete(t, slow, 11), BP_ENOTFOUND);
    assert_int_equal(bp_lease_complete(t, fast, 11), BP_OK);
    assert_int_equal(bp_lease_complete(t, fast, 11), BP_ENOTFOUND);
    assert_int_equal(bp_lease_task_count(t, BP_LEASE_DONE), 1);
    bp_lease_table_destroy(&t);
}

static void test_lease_hard_deadline_and_fail(void **state)
{
    (void)state;
    bp_lease_cfg cfg = {1000, 3, 60000, 2500, 3, 4};
    bp_lease_table *t = NULL;
    bp_lease_table_new(&cfg, &t);
    uint32_t w;
    bp_lease_worker_add(t, 0, &w);
    bp_lease_task_add(t, 1);
    bp_lease_task_add(t, 2);
    bp_lease_grant(t, w, 1, 0);
    assert_int_equal(bp_lease_fail(t, w, 1), BP_OK); /* deterministic failure */
    assert_int_equal(bp_lease_task_state(t, 1, NULL, NULL), BP_LEASE_FAILED);
    bp_lease_grant(t, w, 2, 100);
    bp_lease_event ev[8];
    size_t n = 0;
    uint64_t p = 0;
    for (int64_t now = 500; now <= 2500; now += 500) {
        p++;
        bp_lease_worker_seen(t, w, now, &p);
        bp_lease_tick(t, now, ev, 8, &n);
    }
    assert_int_equal(n, 0);
    p++;
    bp_lease_worker_seen(t, w, 2700, &p);
    bp_lease_tick(t, 2700, ev, 8, &n); /* past 100 + 2500 */
    assert_int_equal(n, 2);
    assert_int_equal(ev[0].kind, BP_LEASE_EV_WORKER_STALLED);
    assert_int_equal(ev[1].task, 2);
    bp_lease_table_destroy(&t);
}

static void test_lease_worker_capacity(void **state)
{
    (void)state;
    bp_lease_table *t = mk(1000, 3, 1000, 3); /* 8 workers */
    uint32_t w[9];
    for (int i = 0; i < 8; i++)
        assert_int_equal(bp_lease_worker_add(t, 0, &w[i]), BP_OK);
    assert_int_equal(bp_lease_worker_add(t, 0, &w[8]), BP_ENOMEM);
    size_t n = 0;
    bp_lease_event ev[2];
    bp_lease_worker_remove(t, w[3], 1, ev, 2, &n);
    assert_int_equal(bp_lease_worker_add(t, 0, &w[8]), BP_OK);
    assert_int_equal(bp_lease_worker_count(t), 8);
    /* event capacity: tick stops early and reports the rest next call */
    size_t total = 0;
    for (int k = 0; k < 10; k++) {
        n = 0;
        bp_lease_tick(t, 100000, ev, 2, &n);
        total += n;
    }
    assert_int_equal(total, 8);
    assert_int_equal(bp_lease_worker_count(t), 0);
    bp_lease_table_destroy(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lease_grant_complete),
        cmocka_unit_test(test_lease_expires_on_worker_death),
        cmocka_unit_test(test_lease_expires_after_stall_window),
        cmocka_unit_test(test_lease_idle_worker_never_stalls),
        cmocka_unit_test(test_lease_quarantine_after_three_attempts),
        cmocka_unit_test(test_lease_clean_leave_does_not_count),
        cmocka_unit_test(test_lease_dedup_late_result_after_reassignment),
        cmocka_unit_test(test_lease_hard_deadline_and_fail),
        cmocka_unit_test(test_lease_worker_capacity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
