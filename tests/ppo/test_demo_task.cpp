// The built-in demo task: determinism from the seed, the gold reward's ordering of good and bad
// responses, mediocre demonstrations, and the preference pairs' label-noise rate.
#include <doctest/doctest.h>

#include <cmath>
#include <set>
#include "engine/error.h"
#include "ppo/demo_task.h"

using namespace ppo;

TEST_CASE("vocabulary, antonyms, decode/encode") {
  CHECK(DemoTask::vocabulary().size() == size_t(DemoTask::vocab_size()));
  const auto ids = DemoTask::encode("<bos> hot up old => cold down new <eos>");
  CHECK(DemoTask::decode(ids) == "<bos> hot up old => cold down new <eos>");
  CHECK(DemoTask::antonym(ids[1]) == ids[5]);
  CHECK(DemoTask::antonym(ids[5]) == ids[1]);
  CHECK(DemoTask::decode({99}) == "<unk:99>");
  CHECK_THROWS_AS(DemoTask::encode("hot potato"), Error);
  CHECK_THROWS_AS(DemoTask::antonym(DemoTask::kEos), Error);
}

TEST_CASE("prompts and demonstrations are deterministic from the seed") {
  const DemoTask a(7), b(7), c(8);
  int differ = 0;
  std::set<size_t> lengths;
  for (uint64_t i = 0; i < 200; ++i) {
    const auto p = a.prompt(i);
    CHECK(p == b.prompt(i));
    CHECK(a.demonstration(i) == b.demonstration(i));
    differ += p != c.prompt(i);
    lengths.insert(p.size());
    CHECK(int64_t(p.size()) <= DemoTask::max_prompt_length());
    CHECK(DemoTask::prompt_words(p).size() == p.size() - 2);
    const auto pair = a.preference_pair(i, 0.1);
    const auto again = b.preference_pair(i, 0.1);
    CHECK(pair.chosen == again.chosen);
    CHECK(pair.rejected == again.rejected);
  }
  CHECK(differ > 150);  // another seed, other prompts
  CHECK(lengths.size() == size_t(DemoTask::kMaxWords - DemoTask::kMinWords + 1));  // every length occurs
}

TEST_CASE("gold reward orders responses as designed") {
  const auto p = DemoTask::encode("<bos> hot up old =>");
  auto gold = [&](const char* response) { return DemoTask::gold_reward(p, DemoTask::encode(response)); };
  const double ideal = gold("cold down new <eos>");
  CHECK(ideal == doctest::Approx(1.0));
  CHECK(DemoTask::gold_reward(p, DemoTask::ideal_response(p)) == doctest::Approx(1.0));
  CHECK(gold("cold down new <eos> <pad> <pad>") == doctest::Approx(1.0));  // padding after EOS ignored
  const double one_wrong = gold("cold up new <eos>");                      // 2/3
  const double chatty = gold("cold down new so <eos>");                    // 1 - 0.1
  const double no_eos = gold("cold down new");                             // 1 - 0.5
  const double short_answer = gold("cold <eos>");                          // 1/3
  const double echo = gold("hot up old <eos>");                            // 0
  const double rambling = gold("the a and so um very not maybe");          // 0 - 0.8 - 0.5 -> clamped -1
  CHECK(one_wrong == doctest::Approx(2.0 / 3.0));
  CHECK(chatty == doctest::Approx(0.9));
  CHECK(no_eos == doctest::Approx(0.5));
  CHECK(short_answer == doctest::Approx(1.0 / 3.0));
  CHECK(echo == doctest::Approx(0.0));
  CHECK(rambling == doctest::Approx(-1.0));
  CHECK(ideal > chatty);
  CHECK(chatty > one_wrong);
  CHECK(one_wrong > no_eos);
  CHECK(no_eos > short_answer);
  CHECK(short_answer > echo);
  CHECK(echo > rambling);
  CHECK(gold("cold down old <eos>") < gold("cold down new <eos>"));  // order matters
  CHECK(gold("down cold new <eos>") < gold("cold down new <eos>"));
}

TEST_CASE("demonstrations are mediocre: mean gold well below 1, well above 0") {
  const DemoTask task(3);
  double sum = 0;
  int perfect = 0;
  const int n = 2000;
  for (int i = 0; i < n; ++i) {
    const double g = DemoTask::gold_reward(task.prompt(uint64_t(i)), task.demonstration(uint64_t(i)));
    sum += g;
    perfect += g == 1.0;
  }
  const double mean = sum / n;
  MESSAGE("demonstration mean gold ", mean, ", perfect fraction ", double(perfect) / n);
  CHECK(mean > 0.45);
  CHECK(mean < 0.75);
  CHECK(perfect > n / 10);      // some demonstrations show the ideal
  CHECK(perfect < n * 6 / 10);  // most do not
}

TEST_CASE("preference pairs: gold-labelled, label noise near the setting") {
  const DemoTask task(11);
  for (double noise : {0.0, 0.1, 0.3}) {
    const int n = 4000;
    int flipped = 0;
    for (int i = 0; i < n; ++i) {
      const PreferencePair pair = task.preference_pair(uint64_t(i), noise);
      REQUIRE(pair.gold_chosen != pair.gold_rejected);
      CHECK(pair.gold_chosen == DemoTask::gold_reward(pair.prompt, pair.chosen));
      CHECK(pair.gold_rejected == DemoTask::gold_reward(pair.prompt, pair.rejected));
      CHECK(pair.flipped == (pair.gold_chosen < pair.gold_rejected));
      flipped += pair.flipped;
    }
    // Binomial(4000, p): sd <= 0.0073; allow 4 sd.
    const double rate = double(flipped) / n;
    CHECK_MESSAGE(std::fabs(rate - noise) < 0.03, "label noise ", noise, ": flipped fraction ", rate);
  }
  CHECK_THROWS_AS(task.preference_pair(0, 0.7), Error);
}
