"""Runs gradient graphs dumped by the tests (GRAD_DUMP=dir cargo test ...) on onnxruntime and
compares with the tract results stored next to them: python tests/data/grad/ort_check.py DIR"""
import glob, json, sys, numpy as np, onnx, onnxruntime as ort
ort.set_default_logger_severity(3)
bad = 0
for f in sorted(glob.glob(sys.argv[1] + "/*.onnx")):
    j = json.load(open(f[:-5] + ".json"))
    try:
        m = onnx.load(f)
        onnx.checker.check_model(m, full_check=True)
        s = ort.InferenceSession(f, providers=["CPUExecutionProvider"])
        x = np.array(j["input"], np.float32).reshape(j["input_shape"])
        c = np.array(j["cotangent"], np.float32).reshape(j["cotangent_shape"])
        l, g = s.run(None, {"input": x, "cotangent": c})
        gt = np.array(j["grad"], np.float32)
        err = np.abs(g.ravel() - gt).max() / max(1e-6, np.abs(gt).max())
        lerr = np.abs(l.ravel() - np.array(j["logits"])).max()
        if err > 1e-4 or lerr > 1e-4:
            bad += 1; print("MISMATCH", f, err, lerr)
    except Exception as e:
        bad += 1; print("FAIL", f, str(e).splitlines()[0][:300])
print("checked", len(glob.glob(sys.argv[1] + "/*.onnx")), "bad", bad)
