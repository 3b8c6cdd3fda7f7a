// Tests of the C++ wrapper (bindings/cpp/conveyor.hpp): RAII ownership, clients from
// classes and lambdas, exceptions in both directions, async completion from threads.
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "conveyor.hpp"
#include "harness.h"

using namespace std::chrono_literals;

namespace {

const conveyor::Millis kWait = 20s;

#define CHECK_THROWS(expr, want_code)                                                              \
  do {                                                                                             \
    bool thrown_ = false;                                                                          \
    try {                                                                                          \
      expr;                                                                                        \
    } catch (const conveyor::Error &e) {                                                           \
      thrown_ = e.code() == (want_code);                                                           \
      if (!thrown_) {                                                                              \
        harness_fail(__FILE__, __LINE__, e.what());                                                \
        return;                                                                                    \
      }                                                                                            \
    }                                                                                              \
    if (!thrown_) {                                                                                \
      harness_fail(__FILE__, __LINE__, #expr " did not throw");                                    \
      return;                                                                                      \
    }                                                                                              \
  } while (0)

conveyor::Config fast_config() {
  conveyor::Config config;
  config.set("backoff.init", "1ms").set("backoff.max", "5ms").set("queue.flush.min_events", "0");
  return config;
}

// Counts instances alive, to check conveyor deletes each client exactly once.
struct Census {
  std::atomic<int> alive{0}, created{0};
};

class CountingClient : public conveyor::Client {
 public:
  CountingClient(Census &census, std::atomic<uint64_t> &events) : census_(census), events_(events) {
    census_.alive++;
    census_.created++;
  }
  ~CountingClient() override { census_.alive--; }
  conveyor::Published publish(const conveyor::Events &events) override {
    events_ += events.size();
    return conveyor::Published::all(events.size());
  }

 private:
  Census &census_;
  std::atomic<uint64_t> &events_;
};

// Fails in every way a C++ client can, then works.
class FlakyClient : public conveyor::Client {
 public:
  explicit FlakyClient(std::vector<std::string> &seen) : seen_(seen) {}
  void connect(conveyor::Millis) override {
    if (connects_++ == 0) {
      throw std::runtime_error("refused");
    }
  }
  conveyor::Published publish(const conveyor::Events &events) override {
    switch (calls_++) {
      case 0:
        throw conveyor::Retry("busy");
      case 1:
        throw std::runtime_error("connection reset");
      case 2:
        throw 42;  // not even an exception type
      case 3:
        seen_.emplace_back(events[0]);
        return conveyor::Published::retry(1);
      default:
        for (std::string_view e : events) {
          seen_.emplace_back(e);
        }
        return conveyor::Published::all(events.size());
    }
  }

 private:
  std::vector<std::string> &seen_;
  int connects_ = 0, calls_ = 0;
};

// Completes batches on a thread of its own; drops every third completion unfinished.
class ThreadedClient : public conveyor::AsyncClient {
 public:
  ThreadedClient(std::atomic<uint64_t> &events, std::atomic<uint64_t> &bytes)
      : events_(events), bytes_(bytes), thread_([this] { run(); }) {}
  ~ThreadedClient() override {
    {
      std::lock_guard<std::mutex> g(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }
  void publish_async(conveyor::Events events, conveyor::Completion completion) override {
    std::lock_guard<std::mutex> g(mu_);
    work_.push_back({events, std::move(completion)});
    cv_.notify_one();
  }

 private:
  struct Item {
    conveyor::Events events;
    conveyor::Completion completion;
  };
  void run() {
    uint64_t n = 0;
    for (;;) {
      std::unique_lock<std::mutex> g(mu_);
      cv_.wait(g, [this] { return stop_ || !work_.empty(); });
      if (work_.empty()) {
        return;
      }
      Item item = std::move(work_.front());
      work_.pop_front();
      g.unlock();
      if (++n % 3 == 0) {
        continue;  // `item.completion` is destroyed undone: reported broken, retried
      }
      for (std::string_view e : item.events) {
        bytes_ += e.size();  // read on this thread: the views are still valid
      }
      events_ += item.events.size();
      item.completion.done(conveyor::Published::all(item.events.size()));
    }
  }
  std::atomic<uint64_t> &events_, &bytes_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> work_;
  bool stop_ = false;
  std::thread thread_;
};

void test_errors_carry_code_and_message() {
  conveyor::Config config;
  try {
    config.set("worker", "zero");
    harness_fail(__FILE__, __LINE__, "set did not throw");
    return;
  } catch (const conveyor::Error &e) {
    CHECK(e.code() == CONVEYOR_ERR_INVALID_CONFIG);
    CHECK(std::string(e.what()).find("worker") != std::string::npos);
  }
  CHECK_THROWS(config.set("no.such.key", "1"), CONVEYOR_ERR_INVALID_CONFIG);
  CHECK(config.set("mode", "failover").get("mode") == "failover");
  CHECK(config.get("backoff.max") == "60s");
  CHECK_THROWS(config.get("nope"), CONVEYOR_ERR_INVALID_CONFIG);
  CHECK(conveyor::version() == CONVEYOR_VERSION_STRING);
}

void test_pipeline_needs_clients_and_keeps_config_on_failure() {
  conveyor::Config config = fast_config();
  CHECK_THROWS(conveyor::Pipeline p(std::move(config)), CONVEYOR_ERR_NO_CLIENTS);
  CHECK(config.get() != nullptr);  // unchanged by the failed build
  std::atomic<uint64_t> events{0};
  config.add_client([&](const conveyor::Events &ev) {
    events += ev.size();
    return conveyor::Published::all(ev.size());
  });
  conveyor::Pipeline pipeline(std::move(config));
  CHECK(config.get() == nullptr);
}

void test_lambda_client_and_acks() {
  std::atomic<uint64_t> events{0}, acked{0};
  std::mutex mu;
  std::vector<std::string> received;
  conveyor::Config config = fast_config();
  config.add_client([&](const conveyor::Events &ev) {
    std::lock_guard<std::mutex> g(mu);
    for (std::string_view e : ev) {
      received.emplace_back(e);
    }
    events += ev.size();
    return conveyor::Published::all(ev.size());
  });
  conveyor::Pipeline pipeline(std::move(config));
  conveyor::Producer producer = pipeline.producer({[&](uint64_t n) { acked += n; }, nullptr, false, false});
  for (int i = 0; i < 100; i++) {
    producer.publish("event-" + std::to_string(i));
  }
  CHECK(producer.publish_batch({"x", "y", ""}) == 3);
  CHECK(producer.try_publish("z"));
  CHECK(producer.publish_packed("pqrs", {1, 0, 3}) == 3);
  pipeline.flush(kWait);
  CHECK(acked == 107 && events == 107);
  CHECK(received.size() == 107 && received[0] == "event-0" && received[99] == "event-99");
  CHECK(received[102].empty() && received[103] == "z");
  CHECK(received[104] == "p" && received[105].empty() && received[106] == "qrs");
  conveyor_counts c = producer.counts();
  CHECK(c.accepted == 107 && c.acked == 107 && c.in_flight == 0);
  std::string stats = pipeline.stats_json();
  CHECK(stats.find("\"acked\":107") != std::string::npos);
  conveyor_close_report report = pipeline.close(kWait);
  CHECK(report.drained == 1 && report.acked == 107);
  CHECK_THROWS(producer.publish("late"), CONVEYOR_ERR_CLOSED);
  CHECK_THROWS(pipeline.flush(), CONVEYOR_ERR_CLOSED);
  CHECK_THROWS(pipeline.producer(), CONVEYOR_ERR_CLOSED);
}

void test_exceptions_in_client_callbacks_are_failures() {
  std::vector<std::string> seen;
  std::atomic<uint64_t> acked{0}, dropped{0};
  conveyor::Config config = fast_config();
  config.set("max_retries", "-1");
  config.add_client(std::make_unique<FlakyClient>(seen));
  conveyor::Pipeline pipeline(std::move(config));
  conveyor::ProducerOptions options;
  options.on_ack = [&](uint64_t n) {
    acked += n;
    throw std::runtime_error("a throwing ACK callback is contained");
  };
  options.on_drop = [&](const conveyor::Events &ev) { dropped += ev.size(); };
  conveyor::Producer producer = pipeline.producer(std::move(options));
  producer.publish_batch({"a", "b", "c"});
  pipeline.flush(kWait);
  CHECK(acked == 3 && dropped == 0);
  // Each event reached the client exactly once, in order, despite the failures.
  CHECK(seen.size() == 3 && seen[0] == "a" && seen[1] == "b" && seen[2] == "c");
}

void test_async_client_on_threads() {
  std::atomic<uint64_t> events{0}, bytes{0}, acked{0};
  uint64_t expected_bytes = 0;
  for (int i = 0; i < 3000; i++) {
    expected_bytes += std::to_string(i).size();
  }
  conveyor::Config config = fast_config();
  config.set("pipelining", "3").set("bulk_max_size", "16").set("max_retries", "-1");
  config.add_client(std::make_unique<ThreadedClient>(events, bytes));
  config.add_client(std::make_unique<ThreadedClient>(events, bytes));
  conveyor::Pipeline pipeline(std::move(config));
  conveyor::Producer producer = pipeline.producer({[&](uint64_t n) { acked += n; }, nullptr, false, false});
  std::vector<std::thread> publishers;
  for (int t = 0; t < 3; t++) {
    publishers.emplace_back([&producer, t] {
      for (int i = 0; i < 1000; i++) {
        producer.publish(std::to_string(t * 1000 + i));
      }
    });
  }
  for (std::thread &t : publishers) {
    t.join();
  }
  pipeline.flush(kWait);
  CHECK(acked == 3000 && events == 3000 && bytes == expected_bytes);
}

void test_clients_deleted_exactly_once() {
  Census census;
  std::atomic<uint64_t> events{0};
  {
    conveyor::Config config = fast_config();
    config.set("mode", "loadbalance");
    config.add_client(std::make_unique<CountingClient>(census, events));
    {
      conveyor::Config unused = fast_config();
      unused.add_client(std::make_unique<CountingClient>(census, events));
      CHECK(census.alive == 2);
    }
    CHECK(census.alive == 1);  // a config never built frees its clients
    conveyor::Pipeline pipeline(std::move(config));
    uint64_t id = pipeline.add_client(std::make_unique<CountingClient>(census, events));
    CHECK(census.alive == 2);
    conveyor::Producer producer = pipeline.producer();
    for (int i = 0; i < 50; i++) {
      producer.publish("e");
    }
    pipeline.flush(kWait);
    CHECK(events == 50);
    pipeline.remove_client(id);
    CHECK(census.alive == 1);
    CHECK_THROWS(pipeline.remove_client(id), CONVEYOR_ERR_INVALID_ARGUMENT);
  }
  CHECK(census.alive == 0 && census.created == 3);
}

void test_refused_client_stays_with_the_caller() {
  Census census;
  std::atomic<uint64_t> events{0};
  conveyor::Config config = fast_config();
  config.add_client(std::make_unique<CountingClient>(census, events));
  conveyor::Pipeline pipeline(std::move(config));  // mode single: no clients at runtime
  auto extra = std::make_unique<CountingClient>(census, events);
  CHECK_THROWS(pipeline.add_client(std::move(extra)), CONVEYOR_ERR_INVALID_ARGUMENT);
  CHECK(census.alive == 1);  // the temporary unique_ptr deleted it, conveyor did not
}

void test_hosts_factory_and_logger() {
  Census census;
  std::atomic<uint64_t> events{0};
  std::mutex mu;
  std::set<std::string> hosts_built;
  std::atomic<int> infos{0};
  {
    conveyor::Config config = fast_config();
    config.set("mode", "failover");
    config.set_logger([&](uint32_t level, std::string_view message) {
      if (level == CONVEYOR_LOG_INFO && message.find("pipeline started") != std::string_view::npos) {
        infos++;
      }
    });
    config.add_hosts({"h1", "h2"}, [&](const std::string &host) -> std::unique_ptr<conveyor::ClientBase> {
      std::lock_guard<std::mutex> g(mu);
      hosts_built.insert(host);
      return std::make_unique<CountingClient>(census, events);
    });
    conveyor::Pipeline pipeline(std::move(config));
    CHECK(infos == 1);
    CHECK(hosts_built == std::set<std::string>({"h1", "h2"}) && census.alive == 2);
    conveyor::Producer producer = pipeline.producer();
    producer.publish("x");
    pipeline.flush(kWait);
    CHECK(events == 1);
  }
  CHECK(census.alive == 0);
  conveyor::Config failing = fast_config();
  failing.add_hosts({"bad"}, [](const std::string &) -> std::unique_ptr<conveyor::ClientBase> {
    throw std::runtime_error("cannot build");
  });
  CHECK_THROWS(conveyor::Pipeline p(std::move(failing)), CONVEYOR_ERR_CLIENT);
}

void test_cancel_and_full() {
  std::atomic<uint64_t> dropped{0};
  std::mutex mu;
  std::condition_variable cv;
  bool open = false;
  conveyor::Config config = fast_config();
  config.set("queue.events", "2");
  config.add_client([&](const conveyor::Events &ev) {
    std::unique_lock<std::mutex> g(mu);
    if (!cv.wait_for(g, kWait, [&] { return open; })) {
      return conveyor::Published::broken();
    }
    return conveyor::Published::all(ev.size());
  });
  conveyor::Pipeline pipeline(std::move(config));
  conveyor::ProducerOptions options;
  options.on_drop = [&](const conveyor::Events &ev) { dropped += ev.size(); };
  options.drop_on_cancel = true;
  conveyor::Producer producer = pipeline.producer(std::move(options));
  CHECK(producer.try_publish("1") && producer.try_publish("2"));
  CHECK(!producer.try_publish("3"));
  CHECK_THROWS(producer.publish("3", 10ms), CONVEYOR_ERR_TIMEOUT);
  std::size_t removed = producer.cancel();
  CHECK_THROWS(producer.publish("4"), CONVEYOR_ERR_CANCELLED);
  {
    std::lock_guard<std::mutex> g(mu);
    open = true;
  }
  cv.notify_all();
  pipeline.flush(kWait);
  CHECK(dropped == removed);
  conveyor_counts c = producer.counts();
  CHECK(c.accepted == 2 && c.acked + c.dropped == 2);
}

}  // namespace

int main() {
  static const harness_test tests[] = {
      HARNESS_TEST(test_errors_carry_code_and_message),
      HARNESS_TEST(test_pipeline_needs_clients_and_keeps_config_on_failure),
      HARNESS_TEST(test_lambda_client_and_acks),
      HARNESS_TEST(test_exceptions_in_client_callbacks_are_failures),
      HARNESS_TEST(test_async_client_on_threads),
      HARNESS_TEST(test_clients_deleted_exactly_once),
      HARNESS_TEST(test_refused_client_stays_with_the_caller),
      HARNESS_TEST(test_hosts_factory_and_logger),
      HARNESS_TEST(test_cancel_and_full),
  };
  return harness_run("cpp", tests, sizeof tests / sizeof tests[0]);
}
