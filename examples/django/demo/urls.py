from django.urls import path
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from api import views

urlpatterns = [
    # Open at the proxy: this is where a client gets its tokens.
    path("api/token/", TokenObtainPairView.as_view(), name="token_obtain_pair"),
    path("api/token/refresh/", TokenRefreshView.as_view(), name="token_refresh"),
    # Behind the proxy's [jwt.simplejwt] policy, and IsAuthenticated here too.
    path("api/hello/", views.hello, name="hello"),
    path("api/headers/", views.headers, name="headers"),
    path("api/upload/", views.upload, name="upload"),
    # Answered by portcullis with a file from its internal /protected/ route.
    path("api/invoice/", views.invoice, name="invoice"),
    # Open everywhere.
    path("public/", views.public, name="public"),
    path("public/export/", views.export, name="export"),
]
