package control_test

import (
	"slices"
	"testing"

	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"

	tlsgatev1 "github.com/tlsgate/tlsgate/gen/tlsgate/v1"
)

// TestReflection: the v1 reflection service lists the control service and
// describes it with no proto files at hand, as grpcurl does.
func TestReflection(t *testing.T) {
	e := start(t, setup{})
	rf, err := reflectionpb.NewServerReflectionClient(e.conn(t)).ServerReflectionInfo(timeout(t, wait))
	if err != nil {
		t.Fatal(err)
	}
	ask := func(req *reflectionpb.ServerReflectionRequest) *reflectionpb.ServerReflectionResponse {
		t.Helper()
		if err := rf.Send(req); err != nil {
			t.Fatal(err)
		}
		resp, err := rf.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}

	var names []string
	for _, s := range ask(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}).GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	for _, want := range []string{tlsgatev1.ControlService_ServiceDesc.ServiceName, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"} {
		if !slices.Contains(names, want) {
			t.Fatalf("services %v lack %s", names, want)
		}
	}

	resp := ask(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: "tlsgate.v1.ControlService"}})
	var methods []string
	for _, b := range resp.GetFileDescriptorResponse().GetFileDescriptorProto() {
		var fd descriptorpb.FileDescriptorProto
		if err := proto.Unmarshal(b, &fd); err != nil {
			t.Fatal(err)
		}
		for _, s := range fd.GetService() {
			if s.GetName() == "ControlService" && fd.GetPackage() == "tlsgate.v1" {
				for _, m := range s.GetMethod() {
					methods = append(methods, m.GetName())
				}
			}
		}
	}
	slices.Sort(methods)
	if want := []string{"Consume", "Disconnect", "Drain", "GetSession", "ListSessions", "Receive", "SendAsync", "SendBatch", "SendStream", "WatchSessions"}; !slices.Equal(methods, want) {
		t.Fatalf("described methods %v, want %v", methods, want)
	}
}
