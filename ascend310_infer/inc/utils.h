/**
 * Helpers of the IPT Ascend 310 runner: options, tile-file listing and raw binary I/O.
 * Kept free of MindSpore headers so they build and can be checked anywhere.
 */
#ifndef IPT_ASCEND310_INFER_INC_UTILS_H_
#define IPT_ASCEND310_INFER_INC_UTILS_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

struct InferOptions {
  std::string mindir_path;
  std::string input_path;                              // preprocess.py's folder of *.bin tile batches
  std::string output_path = "./result_Files";          // one output *.bin per input, same name
  std::string precision_mode = "allow_fp32_to_fp16";   // empty: the device default (force_fp16)
  int device_id = 0;
};

// Parses --key=value or --key value for the InferOptions fields; false with a message otherwise.
bool ParseOptions(int argc, char **argv, InferOptions *options, std::string *error);

// The canonical absolute path, or "" if it does not exist.
std::string RealPath(const std::string &path);

bool IsDirectory(const std::string &path);

// Creates the folder (and its parents) if needed.
bool MakeDirectories(const std::string &path);

// Names (not paths) of the regular *.bin files of a folder, sorted: the tiler's order.
std::vector<std::string> ListBinFiles(const std::string &dir);

std::string JoinPath(const std::string &dir, const std::string &name);

bool ReadBinaryFile(const std::string &path, std::vector<uint8_t> *data);

bool WriteBinaryFile(const std::string &path, const void *data, size_t size);

#endif  // IPT_ASCEND310_INFER_INC_UTILS_H_
