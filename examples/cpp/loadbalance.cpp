// conveyor from C++: load-balance events over a lambda client and an asynchronous
// client that completes on its own thread.
// Build: c++ -std=c++17 loadbalance.cpp $(pkg-config --cflags --libs conveyor)
#include <atomic>
#include <condition_variable>
#include <deque>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>

#include <conveyor.hpp>

// Completes each batch on a worker thread of its own, as a network client would.
class BackgroundClient : public conveyor::AsyncClient {
 public:
  BackgroundClient() : thread_([this] { run(); }) {}
  ~BackgroundClient() override {
    {
      std::lock_guard<std::mutex> g(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    thread_.join();
    std::cout << "background client delivered " << delivered_ << " events\n";
  }
  void publish_async(conveyor::Events events, conveyor::Completion done) override {
    std::lock_guard<std::mutex> g(mu_);
    queue_.push_back({events, std::move(done)});
    cv_.notify_one();
  }

 private:
  struct Batch {
    conveyor::Events events;
    conveyor::Completion done;
  };
  void run() {
    for (;;) {
      std::unique_lock<std::mutex> g(mu_);
      cv_.wait(g, [this] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) {
        return;
      }
      Batch b = std::move(queue_.front());
      queue_.pop_front();
      g.unlock();
      delivered_ += b.events.size();
      b.done.done(conveyor::Published::all(b.events.size()));
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Batch> queue_;
  bool stop_ = false;
  std::size_t delivered_ = 0;
  std::thread thread_;
};

int main() {
  try {
    std::atomic<uint64_t> acked{0}, by_lambda{0};
    conveyor::Config config;
    config.set("mode", "loadbalance").set("bulk_max_size", "50");
    config.add_client([&](const conveyor::Events &events) {
      by_lambda += events.size();
      return conveyor::Published::all(events.size());
    });
    config.add_client(std::make_unique<BackgroundClient>());
    conveyor::Pipeline pipeline(std::move(config));
    {
      conveyor::Producer producer = pipeline.producer({[&](uint64_t n) { acked += n; }, nullptr, false, false});
      for (int i = 0; i < 1000; i++) {
        producer.publish("event " + std::to_string(i));
      }
      pipeline.flush(std::chrono::seconds(5));
    }
    std::cout << "acked " << acked << " (" << by_lambda << " through the lambda client)\n";
    conveyor_close_report report = pipeline.close(std::chrono::seconds(5));
    std::cout << "closed: accepted " << report.accepted << ", acked " << report.acked << ", dropped "
              << report.dropped << "\n";
    return acked == 1000 ? 0 : 1;
  } catch (const conveyor::Error &e) {
    std::cerr << "conveyor error " << e.code() << ": " << e.what() << "\n";
    return 1;
  }
}
