/* Shared helpers for the job tests: run one job spec directly or through
 * the task driver, and compare outputs byte for byte. Include after
 * <cmocka.h> (they fail the running test through cmocka). */
#ifndef BITPLAN_TEST_JOB_UTIL_H
#define BITPLAN_TEST_JOB_UTIL_H

#include <stdlib.h>
#include <string.h>

#include "bitplan/job_spec.h"
#include "bitplan/plan.h"
#include "bitplan/task.h"

/* The plan text of bp_job_run on spec (fails the test on any error). */
static inline char *run_direct(const char *spec)
{
    bp_error err;
    bp_job_spec_doc *doc = NULL;
    if (bp_job_spec_parse(spec, strlen(spec), "test", &doc, &err) != BP_OK)
        fail_msg("spec: %s", err.msg);
    bp_plan *plan = NULL;
    if (bp_job_run(bp_job_spec_get(doc), &plan, &err) != BP_OK)
        fail_msg("direct: %s", err.msg);
    char *s = bp_plan_to_string(plan, &err);
    assert_non_null(s);
    bp_plan_destroy(&plan);
    bp_job_spec_doc_destroy(&doc);
    return s;
}

/* The plan text of the task driver (bp_job_run_local, one worker). */
static inline char *run_tasks(const char *spec)
{
    bp_error err;
    char *out = NULL;
    if (bp_job_run_local(spec, strlen(spec), 1, &out, &err) != BP_OK)
        fail_msg("tasks: %s", err.msg);
    return out;
}

/* Byte equality, reporting the first differing line. */
static inline void assert_same_text(const char *what, const char *a, const char *b)
{
    if (!strcmp(a, b))
        return;
    size_t i = 0, line = 1, start = 0;
    for (; a[i] && a[i] == b[i]; i++)
        if (a[i] == '\n') {
            line++;
            start = i + 1;
        }
    fail_msg("%s differ at line %zu:\n  %.200s\n  %.200s", what, line, a + start, b + start);
}

#endif
