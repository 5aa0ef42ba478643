// The one sequence layout (ppo/sequences.h): left-padded prompts, right-padded responses,
// positions from each row's first real token, next-token targets with the pad in the last column;
// rows uploaded in any order; malformed rows are errors naming the row.
#include "helpers.h"

#include "ppo/sequences.h"

using namespace ppo;
using namespace ppo::test;

TEST_CASE("pack_sequences: the layout, by hand") {
  const SequenceBatch s = pack_sequences({{5, 6}, {7, 8, 9}}, {{10}, {11, 12, 13}}, 3, 3, 0);
  CHECK(s.T() == 6);
  CHECK(s.tokens == std::vector<int32_t>{0, 5, 6, 10, 0, 0, /**/ 7, 8, 9, 11, 12, 13});
  CHECK(s.pos == std::vector<int32_t>{0, 0, 1, 2, 0, 0, /**/ 0, 1, 2, 3, 4, 5});
  CHECK(s.mask == std::vector<int32_t>{0, 1, 1, 1, 0, 0, /**/ 1, 1, 1, 1, 1, 1});
  CHECK(s.last_column(0) == 3);
  CHECK(s.last_column(1) == 5);

  CHECK_THROWS_WITH_AS(pack_sequences({{}}, {{1}}, 3, 3, 0), doctest::Contains("row 0: prompt of 0 tokens"), Error);
  CHECK_THROWS_WITH_AS(pack_sequences({{1}, {1, 2, 3, 4}}, {{1}, {1}}, 3, 3, 0), doctest::Contains("row 1"), Error);
  CHECK_THROWS_WITH_AS(pack_sequences({{1}}, {{1, 2, 3, 4}}, 3, 3, 0), doctest::Contains("exceeds the response length"),
                       Error);
}

TEST_CASE("upload_sequences: rows in the order given, targets the next token, the pad last") {
  BackendFixture f(DeviceKind::CPU, Precision::F32);
  const SequenceBatch s = pack_sequences({{5, 6}, {7, 8, 9}}, {{10}, {11, 12, 13}}, 3, 3, 2);
  SequenceTensors buf;
  for (Tensor* t : {&buf.tokens, &buf.pos, &buf.mask, &buf.targets}) *t = f.pool->take(DType::I32, {4, 8}, "buf");
  const SequenceTensors in = upload_sequences(*f.backend, s, {1, 0}, buf);
  CHECK(in.tokens.dim(0) == 2);
  CHECK(in.tokens.dim(1) == 6);
  CHECK(f.backend->to_host_ids(in.tokens) == std::vector<int32_t>{7, 8, 9, 11, 12, 13, /**/ 2, 5, 6, 10, 2, 2});
  CHECK(f.backend->to_host_ids(in.targets) == std::vector<int32_t>{8, 9, 11, 12, 13, 2, /**/ 5, 6, 10, 2, 2, 2});
  CHECK(f.backend->to_host_ids(in.pos) == std::vector<int32_t>{0, 1, 2, 3, 4, 5, /**/ 0, 0, 1, 2, 0, 0});
  CHECK(row_range(3, 2) == std::vector<int32_t>{3, 4});
  CHECK_THROWS_WITH_AS(upload_sequences(*f.backend, s, {2}, buf), doctest::Contains("row 2 of a batch of 2"), Error);
}
