//! gRPC end to end: a real `grpcio` server, built from source (its requirements
//! installed by the build) and deployed with `--protocol h2c`, called through the
//! gateway by a real `grpcio` client with a generated stub: unary, server streaming,
//! and a deadline the server does not meet.

mod common;

use std::process::Command;

use common::*;

const PROTO: &str = r#"
syntax = "proto3";
package greet;

service Greeter {
  rpc Hello (HelloRequest) returns (HelloReply);
  rpc Count (CountRequest) returns (stream Number);
  rpc Slow (HelloRequest) returns (HelloReply);
}

message HelloRequest { string name = 1; }
message HelloReply { string message = 1; }
message CountRequest { int32 up_to = 1; }
message Number { int32 value = 1; }
"#;

const SERVER: &str = r#"
import os, time
from concurrent import futures
import grpc
import greet_pb2, greet_pb2_grpc

class Greeter(greet_pb2_grpc.GreeterServicer):
    def Hello(self, request, context):
        return greet_pb2.HelloReply(message=f"hello, {request.name}")

    def Count(self, request, context):
        for i in range(1, request.up_to + 1):
            yield greet_pb2.Number(value=i)

    def Slow(self, request, context):
        time.sleep(5)
        return greet_pb2.HelloReply(message="too late")

server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
greet_pb2_grpc.add_GreeterServicer_to_server(Greeter(), server)
server.add_insecure_port(f"127.0.0.1:{os.environ['PORT']}")
server.start()
server.wait_for_termination()
"#;

const CLIENT: &str = r#"
import json, sys, time
import grpc
import greet_pb2, greet_pb2_grpc

gateway, authority = sys.argv[1], sys.argv[2]
channel = grpc.insecure_channel(gateway, options=[("grpc.default_authority", authority)])
stub = greet_pb2_grpc.GreeterStub(channel)
out = {}
out["unary"] = stub.Hello(greet_pb2.HelloRequest(name="grpc"), timeout=30).message
out["stream"] = [n.value for n in stub.Count(greet_pb2.CountRequest(up_to=5), timeout=30)]
started = time.monotonic()
try:
    stub.Slow(greet_pb2.HelloRequest(name="late"), timeout=0.5)
    out["deadline"] = "answered"
except grpc.RpcError as e:
    out["deadline"] = e.code().name
out["deadline_after_s"] = time.monotonic() - started
print(json.dumps(out))
"#;

#[test]
fn a_grpc_service_answers_unary_streaming_and_deadline_calls_through_the_gateway() {
    let (_dir, app) = app_of(&[
        ("greet.proto", PROTO),
        ("main.py", SERVER),
        ("requirements.txt", "grpcio==1.68.1\nprotobuf==5.29.6\n"),
    ]);
    let deps = python_test_deps();
    run(Command::new("python3")
        .env("PYTHONPATH", &deps)
        .current_dir(&app)
        .args([
            "-m",
            "grpc_tools.protoc",
            "-I.",
            "--python_out=.",
            "--grpc_python_out=.",
        ])
        .arg("greet.proto"));

    let server = Server::start(&[]);
    let out = server.cli(&["deploy", "greeter", app.to_str().unwrap(), "--protocol", "h2c"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stderr, server.log());

    let client = app.join("client.py");
    std::fs::write(&client, CLIENT).unwrap();
    let called = Command::new("python3")
        .env("PYTHONPATH", format!("{}:{}", deps.display(), app.display()))
        .arg(&client)
        .arg(server.gateway.to_string())
        .arg(Server::host("greeter"))
        .output()
        .unwrap();
    assert!(
        called.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&called.stderr),
        server.log()
    );
    let result: serde_json::Value = serde_json::from_slice(&called.stdout).unwrap();
    assert_eq!(result["unary"], "hello, grpc", "{result}");
    assert_eq!(result["stream"], serde_json::json!([1, 2, 3, 4, 5]), "{result}");
    assert_eq!(result["deadline"], "DEADLINE_EXCEEDED", "{result}");
    assert!(result["deadline_after_s"].as_f64().unwrap() < 4.0, "{result}");

    // The manifest says what was deployed: Knative's port name.
    let manifest = server.cli(&["get", "service", "greeter", "-o", "yaml"]);
    assert!(manifest.stdout.contains("name: h2c"), "{}", manifest.stdout);
}
