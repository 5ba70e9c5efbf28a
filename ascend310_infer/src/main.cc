/**
 * IPT on Ascend 310: runs an exported MindIR (export.py --file_format MINDIR) over the tile batches
 * written by preprocess.py and writes each output under the input's name for postprocess.py.
 *
 *   out/main --mindir_path=ipt_sr_x2.mindir --input_path=preprocess_Result \
 *            --output_path=result_Files --device_id=0 [--precision_mode=allow_fp32_to_fp16]
 *
 * Each input file is one float32 (N, 3, 48, 48) batch, N being the MindIR's batch; a file of another
 * size is an error (preprocess.py with --ckpt MODEL.mindir takes N from the model).
 *
 * Every failure is one "error: ..." line on stderr and exit code 1 (2 for bad options). MindSpore reports
 * errors either as a Status or by throwing (MindSpore Lite throws when a MindIR is newer than the runtime:
 * "can only support the maximum mind ir version"); both are caught, never left to abort the process.
 */
#include <chrono>
#include <exception>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "include/api/context.h"
#include "include/api/model.h"
#include "include/api/serialization.h"
#include "include/api/types.h"
#include "inc/utils.h"

using mindspore::Context;
using mindspore::DataType;
using mindspore::Graph;
using mindspore::GraphCell;
using mindspore::kSuccess;
using mindspore::Model;
using mindspore::ModelType;
using mindspore::MSTensor;
using mindspore::Serialization;
using mindspore::Status;

namespace {

constexpr char kUsage[] =
  "usage: main --mindir_path=MODEL.mindir --input_path=TILE_DIR [--output_path=result_Files]\n"
  "            [--device_id=0] [--precision_mode=allow_fp32_to_fp16]";

std::string ShapeText(const std::vector<int64_t> &shape) {
  std::string text = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    text += (i ? "," : "") + std::to_string(shape[i]);
  }
  return text + ")";
}

int Fail(const std::string &message) {
  std::cerr << "error: " << message << std::endl;
  return 1;
}

// The first non-blank line of a MindSpore message, trimmed: exceptions carry a C++ call stack after it.
std::string FirstLine(const std::string &text) {
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) {
      end = text.size();
    }
    const size_t first = text.find_first_not_of(" \t\r", start);
    if (first != std::string::npos && first < end) {
      const size_t last = text.find_last_not_of(" \t\r", end - 1);
      return text.substr(first, last - first + 1);
    }
    start = end + 1;
  }
  return "";
}

// Why MindSpore failed, in one line; a MindIR newer than the runtime gets a hint on what to do.
std::string Reason(const std::string &text) {
  std::string reason = FirstLine(text);
  if (reason.empty()) {
    return "no reason given";
  }
  if (reason.find("mind ir version") != std::string::npos) {
    reason += " (this MindSpore runtime is older than the MindIR format of the file: install the MindSpore Lite "
              "release matching the exporting MindSpore, see README \"Inference on Ascend 310\")";
  }
  return reason;
}

// Runs one MindSpore call that reports failure by a Status or by an exception: true on success, else false
// with the reason in one line.
template <typename Call>
bool Attempt(Call call, std::string *reason) {
  try {
    Status ret = call();
    if (ret == kSuccess) {
      return true;
    }
    const std::string message = ret.ToString();
    *reason = FirstLine(message).empty()
                ? "no reason given (MindSpore status " + std::to_string(static_cast<uint64_t>(ret.StatusCode())) + ")"
                : Reason(message);
  } catch (const std::exception &e) {
    *reason = Reason(e.what());
  } catch (...) {
    *reason = "unknown exception";
  }
  return false;
}

// Loads the MindIR, builds it for the device and runs every tile batch (MindSpore calls only here).
int Infer(const InferOptions &options, const std::string &mindir, const std::vector<std::string> &files) {
  auto context = std::make_shared<Context>();
  auto ascend310 = std::make_shared<mindspore::Ascend310DeviceInfo>();
  ascend310->SetDeviceID(static_cast<uint32_t>(options.device_id));
  if (!options.precision_mode.empty()) {
    ascend310->SetPrecisionMode(options.precision_mode);
  }
  context->MutableDeviceInfo().push_back(ascend310);

  std::string reason;
  Graph graph;
  if (!Attempt([&] { return Serialization::Load(mindir, ModelType::kMindIR, &graph); }, &reason)) {
    return Fail("cannot load " + mindir + ": " + reason);
  }
  Model model;
  auto build_start = std::chrono::steady_clock::now();
  if (!Attempt([&] { return model.Build(GraphCell(graph), context); }, &reason)) {
    return Fail("cannot build the model for Ascend 310 device " + std::to_string(options.device_id) + ": " +
                reason);
  }
  double build_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - build_start).count();

  std::vector<MSTensor> model_inputs = model.GetInputs();
  if (model_inputs.size() != 1 || model_inputs[0].DataType() != DataType::kNumberTypeFloat32) {
    return Fail(mindir + " is not an IPT export (expected one float32 input)");
  }
  const MSTensor &input = model_inputs[0];
  const std::vector<int64_t> input_shape = input.Shape();
  for (int64_t dim : input_shape) {
    if (dim <= 0) {
      return Fail(mindir + " has a dynamic input " + ShapeText(input_shape) +
                  ": export it with a fixed batch (export.py --export_batch N, N >= 1)");
    }
  }
  const size_t input_bytes = input.DataSize();
  std::cout << "model " << mindir << ": input " << ShapeText(input_shape) << ", built in " << build_ms << " ms"
            << std::endl;

  std::vector<uint8_t> buffer;
  double total_ms = 0.0;
  double steady_ms = 0.0;  // without the first call, which includes one-off warm-up
  int64_t tiles = 0;
  for (size_t i = 0; i < files.size(); ++i) {
    const std::string in_path = JoinPath(options.input_path, files[i]);
    if (!ReadBinaryFile(in_path, &buffer)) {
      return Fail("cannot read " + in_path);
    }
    if (buffer.size() != input_bytes) {
      return Fail(in_path + " holds " + std::to_string(buffer.size()) + " bytes but the model takes " +
                  ShapeText(input_shape) + " float32 (" + std::to_string(input_bytes) +
                  " bytes): run preprocess.py with --ckpt " + options.mindir_path);
    }
    std::vector<MSTensor> inputs;
    inputs.emplace_back(input.Name(), input.DataType(), input_shape, buffer.data(), buffer.size());
    std::vector<MSTensor> outputs;
    auto start = std::chrono::steady_clock::now();
    if (!Attempt([&] { return model.Predict(inputs, &outputs); }, &reason)) {
      return Fail("inference failed on " + in_path + ": " + reason);
    }
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    if (outputs.size() != 1) {
      return Fail("inference failed on " + in_path + ": " + std::to_string(outputs.size()) +
                  " outputs, expected 1");
    }
    total_ms += ms;
    if (i > 0) {
      steady_ms += ms;
    }
    tiles += input_shape.empty() ? 1 : input_shape[0];
    std::shared_ptr<const void> data = outputs[0].Data();
    const std::string out_path = JoinPath(options.output_path, files[i]);
    if (data == nullptr || !WriteBinaryFile(out_path, data.get(), outputs[0].DataSize())) {
      return Fail("cannot write " + out_path);
    }
  }
  const size_t n = files.size();
  std::cout << "inferred " << n << " tile batches (" << tiles << " tiles) into " << options.output_path << std::endl;
  std::cout << "NN inference cost average time: " << total_ms / n << " ms per batch of " << ShapeText(input_shape);
  if (n > 1) {
    std::cout << " (" << steady_ms / (n - 1) << " ms without the first)";
  }
  std::cout << ", " << total_ms / static_cast<double>(tiles) << " ms per tile" << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char **argv) {
  InferOptions options;
  std::string error;
  if (!ParseOptions(argc, argv, &options, &error)) {
    std::cerr << "error: " << error << "\n" << kUsage << std::endl;
    return 2;
  }
  const std::string mindir = RealPath(options.mindir_path);
  if (mindir.empty()) {
    return Fail("MindIR not found: " + options.mindir_path);
  }
  if (!IsDirectory(options.input_path)) {
    return Fail("input folder not found: " + options.input_path);
  }
  const std::vector<std::string> files = ListBinFiles(options.input_path);
  if (files.empty()) {
    return Fail("no .bin tile files in " + options.input_path + " (run preprocess.py first)");
  }
  if (!MakeDirectories(options.output_path)) {
    return Fail("cannot create the output folder " + options.output_path);
  }

  try {
    return Infer(options, mindir, files);
  } catch (const std::exception &e) {  // a MindSpore call outside Load/Build/Predict
    return Fail("MindSpore: " + Reason(e.what()));
  } catch (...) {
    return Fail("MindSpore: unknown exception");
  }
}
