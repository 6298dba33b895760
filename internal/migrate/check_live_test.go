package migrate

import (
	"strings"
	"testing"

	"github.com/cargo-migrate/cargo/internal/volstatus"
)

func TestSameXSave(t *testing.T) {
	host := func(mask string, size, maxSize int64) volstatus.Host {
		return volstatus.Host{XSaveFeatures: mask, XSaveSize: size, XSaveMaxSize: maxSize}
	}
	tests := []struct {
		name     string
		src, dst volstatus.Host
		wantErr  string
	}{
		{"the same CPU", host("0x2e7", 2696, 2696), host("0x2e7", 2696, 2696), ""},
		{"a plugin that does not say", host("", 0, 0), host("0x7", 832, 832), ""},
		{"the target lacks AVX-512 state", host("0xe7", 2440, 2440), host("0x7", 2440, 2440), "XSAVE components 0xe0 missing"},
		{"more components on the target, but another layout", host("0x7", 832, 832), host("0xe7", 2440, 2440), "saves registers in 2440 bytes"},
		{"the same components, another maximum", host("0x7", 832, 832), host("0x7", 832, 2696), "(2696 at most)"},
		{"an unreadable mask", host("0xzz", 832, 832), host("0x7", 1, 1), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := sameXSave("h1", "h2", tt.src, tt.dst)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "move it without --live") {
				t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
			}
		})
	}
}
