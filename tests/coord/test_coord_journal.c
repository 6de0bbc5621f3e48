/* Journal: append + replay, torn last record, garbage tail, compaction. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bitplan/journal.h"

typedef struct seen {
    int n;
    bp_jrec_type type[16];
    char job[16][72];
    char text[16][256];
    int32_t code[16];
} seen;

static int collect(void *ud, const bp_jrec *r, bp_error *err)
{
    (void)err;
    seen *s = ud;
    if (s->n < 16) {
        s->type[s->n] = r->type;
        snprintf(s->job[s->n], sizeof s->job[0], "%s", r->job);
        snprintf(s->text[s->n], sizeof s->text[0], "%s", r->text ? r->text : "");
        s->code[s->n] = r->code;
    }
    s->n++;
    return BP_OK;
}

static void path_for(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", BP_TEST_TMPDIR, name);
    unlink(out);
}

static void write_three(const char *path)
{
    bp_journal *j = NULL;
    bp_error e;
    assert_int_equal(bp_journal_open(path, NULL, NULL, &j, NULL, &e), BP_OK);
    bp_jrec r1 = {BP_JREC_SUBMIT, "j000001", "{\"kind\":\"test\"}", 15, 0, 0};
    bp_jrec r2 = {BP_JREC_DONE, "j000001", "{\"plan\":1}", 10, 0, 0};
    bp_jrec r3 = {BP_JREC_FAILED, "j000002", "task 3 quarantined", 18, 2, 0};
    assert_int_equal(bp_journal_append(j, &r1, &e), BP_OK);
    assert_int_equal(bp_journal_append(j, &r2, &e), BP_OK);
    assert_int_equal(bp_journal_append(j, &r3, &e), BP_OK);
    bp_journal_close(&j);
    bp_journal_close(&j);
}

static void test_journal_append_replay(void **state)
{
    (void)state;
    char path[1024];
    path_for(path, sizeof path, "journal-basic");
    write_three(path);
    seen s;
    memset(&s, 0, sizeof s);
    bp_journal_replay_info info;
    assert_int_equal(bp_journal_replay(path, collect, &s, &info, NULL), BP_OK);
    assert_int_equal(s.n, 3);
    assert_int_equal(info.records, 3);
    assert_int_equal(info.torn_bytes, 0);
    assert_int_equal(s.type[0], BP_JREC_SUBMIT);
    assert_string_equal(s.text[0], "{\"kind\":\"test\"}");
    assert_int_equal(s.type[1], BP_JREC_DONE);
    assert_string_equal(s.text[1], "{\"plan\":1}");
    assert_int_equal(s.type[2], BP_JREC_FAILED);
    assert_string_equal(s.job[2], "j000002");
    assert_int_equal(s.code[2], 2);
    /* reopen and append: earlier records stay */
    bp_journal *j = NULL;
    memset(&s, 0, sizeof s);
    assert_int_equal(bp_journal_open(path, collect, &s, &j, NULL, NULL), BP_OK);
    bp_jrec r4 = {BP_JREC_CANCEL, "j000003", NULL, 0, 0, 0};
    assert_int_equal(bp_journal_append(j, &r4, NULL), BP_OK);
    bp_journal_close(&j);
    memset(&s, 0, sizeof s);
    assert_int_equal(bp_journal_replay(path, collect, &s, NULL, NULL), BP_OK);
    assert_int_equal(s.n, 4);
    assert_int_equal(s.type[3], BP_JREC_CANCEL);
}

static void test_journal_torn_last_record(void **state)
{
    (void)state;
    char path[1024];
    path_for(path, sizeof path, "journal-torn");
    write_three(path);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    /* a crash in the middle of the last write: cut it at every length */
    bp_journal_replay_info full;
    seen s;
    memset(&s, 0, sizeof s);
    assert_int_equal(bp_journal_replay(path, NULL, NULL, &full, NULL), BP_OK);
    char *orig = malloc((size_t)st.st_size);
    FILE *fp = fopen(path, "rb");
    assert_int_equal(fread(orig, 1, (size_t)st.st_size, fp), (size_t)st.st_size);
    fclose(fp);
    /* offset where record 3 starts: replay a copy with 2 records */
    char p2[1024];
    path_for(p2, sizeof p2, "journal-two");
    bp_journal *j = NULL;
    bp_journal_open(p2, NULL, NULL, &j, NULL, NULL);
    bp_jrec r1 = {BP_JREC_SUBMIT, "j000001", "{\"kind\":\"test\"}", 15, 0, 0};
    bp_jrec r2 = {BP_JREC_DONE, "j000001", "{\"plan\":1}", 10, 0, 0};
    bp_journal_append(j, &r1, NULL);
    bp_journal_append(j, &r2, NULL);
    bp_journal_close(&j);
    struct stat st2;
    stat(p2, &st2);
    for (off_t cut = st2.st_size + 1; cut < st.st_size; cut += 3) {
        fp = fopen(path, "wb");
        fwrite(orig, 1, (size_t)cut, fp);
        fclose(fp);
        memset(&s, 0, sizeof s);
        bp_journal_replay_info info;
        j = NULL;
        assert_int_equal(bp_journal_open(path, collect, &s, &j, &info, NULL), BP_OK);
        assert_int_equal(s.n, 2); /* the torn record is ignored */
        assert_int_equal(info.good_bytes, (uint64_t)st2.st_size);
        assert_int_equal(info.torn_bytes, (uint64_t)(cut - st2.st_size));
        /* truncated, and appending afterwards gives a valid journal */
        bp_jrec r = {BP_JREC_CANCEL, "j000009", NULL, 0, 0, 0};
        assert_int_equal(bp_journal_append(j, &r, NULL), BP_OK);
        bp_journal_close(&j);
        memset(&s, 0, sizeof s);
        assert_int_equal(bp_journal_replay(path, collect, &s, &info, NULL), BP_OK);
        assert_int_equal(s.n, 3);
        assert_string_equal(s.job[2], "j000009");
        assert_int_equal(info.torn_bytes, 0);
    }
    free(orig);
}

static void test_journal_corrupt_byte_stops_replay(void **state)
{
    (void)state;
    char path[1024];
    path_for(path, sizeof path, "journal-corrupt");
    write_three(path);
    struct stat st;
    stat(path, &st);
    /* flip a byte inside the last record's payload: CRC mismatch */
    FILE *fp = fopen(path, "r+b");
    fseek(fp, st.st_size - 3, SEEK_SET);
    int ch = fgetc(fp);
    fseek(fp, st.st_size - 3, SEEK_SET);
    fputc(ch ^ 0x40, fp);
    fclose(fp);
    seen s;
    memset(&s, 0, sizeof s);
    bp_journal_replay_info info;
    assert_int_equal(bp_journal_replay(path, collect, &s, &info, NULL), BP_OK);
    assert_int_equal(s.n, 2);
    assert_true(info.torn_bytes > 0);
    /* garbage appended after valid records is ignored too */
    path_for(path, sizeof path, "journal-garbage");
    write_three(path);
    fp = fopen(path, "ab");
    fputs("BPJ1\xff\xff\xff\x7fgarbage", fp);
    fclose(fp);
    memset(&s, 0, sizeof s);
    assert_int_equal(bp_journal_replay(path, collect, &s, &info, NULL), BP_OK);
    assert_int_equal(s.n, 3);
}

static void test_journal_rewrite_and_invalid(void **state)
{
    (void)state;
    char path[1024];
    path_for(path, sizeof path, "journal-rewrite");
    write_three(path);
    bp_journal *j = NULL;
    assert_int_equal(bp_journal_open(path, NULL, NULL, &j, NULL, NULL), BP_OK);
    bp_jrec keep[2] = {{BP_JREC_SUBMIT, "j000005", "{}", 2, 0, 0},
                       {BP_JREC_DONE, "j000005", "{\"r\":5}", 7, 0, 0}};
    assert_int_equal(bp_journal_rewrite(j, keep, 2, NULL), BP_OK);
    bp_jrec more = {BP_JREC_SUBMIT, "j000006", "{}", 2, 0, 0};
    assert_int_equal(bp_journal_append(j, &more, NULL), BP_OK);
    bp_jrec bad_id = {BP_JREC_SUBMIT, "bad id/..", "{}", 2, 0, 0};
    bp_error e;
    assert_int_equal(bp_journal_append(j, &bad_id, &e), BP_EINVAL);
    bp_journal_close(&j);
    seen s;
    memset(&s, 0, sizeof s);
    assert_int_equal(bp_journal_replay(path, collect, &s, NULL, NULL), BP_OK);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.job[0], "j000005");
    assert_string_equal(s.text[1], "{\"r\":5}");
    assert_string_equal(s.job[2], "j000006");
    assert_int_equal(bp_journal_replay(BP_TEST_TMPDIR "/no-such-journal", NULL, NULL, NULL, NULL),
                     BP_ENOTFOUND);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_journal_append_replay),
        cmocka_unit_test(test_journal_torn_last_record),
        cmocka_unit_test(test_journal_corrupt_byte_stops_replay),
        cmocka_unit_test(test_journal_rewrite_and_invalid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
