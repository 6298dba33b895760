package names

import (
	"strings"
	"testing"
)

func TestValidateVolume(t *testing.T) {
	tests := []struct {
		name    string
		wantErr string
	}{
		{"data", ""},
		{"a1", ""},
		{"my_vol.v2-final", ""},
		{"9lives", ""},
		{"", "empty"},
		{"a", "invalid volume name"},
		{"a/b", "invalid volume name"},
		{"../etc", "invalid volume name"},
		{".hidden", "invalid volume name"},
		{"-flag", "invalid volume name"},
		{"with space", "invalid volume name"},
		{"tab\tname", "invalid volume name"},
		{"nul\x00x", "invalid volume name"},
		{"ünïcode", "invalid volume name"},
		{strings.Repeat("x", 256), "too long"},
		{strings.Repeat("x", 255), ""},
	}
	for _, tt := range tests {
		err := ValidateVolume(tt.name)
		if tt.wantErr == "" {
			if err != nil {
				t.Errorf("ValidateVolume(%q) = %v, want nil", tt.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("ValidateVolume(%q) = %v, want error containing %q", tt.name, err, tt.wantErr)
		}
	}
}
